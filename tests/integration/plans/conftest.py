from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session

from ledger.amounts import Amount
from ledger.units import currency
from plans import catalog

USD = currency("USD")
EUR = currency("EUR")
JAN = datetime(2026, 1, 1, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)
MAR = datetime(2026, 3, 1, tzinfo=UTC)
APR = datetime(2026, 4, 1, tzinfo=UTC)


def usd(value: str) -> Amount:
    return Amount.parse(value, USD)


def price(model: str, inp: str, out: str, **extra: str) -> dict[str, object]:
    return {"model": model, "input_per_mtok": inp, "output_per_mtok": out, **extra}


@pytest.fixture
def models(session: Session) -> Session:
    """Two models in the catalog (committed)."""
    catalog.create_model(session, id="m-large", provider="acme", display_name="Large")
    catalog.create_model(session, id="m-small", provider="acme", display_name="Small")
    session.commit()
    return session
