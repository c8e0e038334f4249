"""Service-level fixtures for wallet tests: a one-model USD catalog and funded accounts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.orm import Session

from ledger.base import utcnow
from plans import catalog
from wallet.accounts import create_account
from wallet.charging import UsageIn
from wallet.models import Account
from wallet.normalize import Tokens
from wallet.topups import record_topup

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MODEL = "m"


@pytest.fixture
def priced(session: Session) -> Session:
    """Model ``m`` at USD 3 in / 15 out per Mtok from 2026-01-01 (committed)."""
    catalog.create_model(session, id=MODEL, provider="acme", display_name="M")
    catalog.create_rate_card(
        session,
        currency="USD",
        effective_from=T0,
        prices=[{"model": MODEL, "input_per_mtok": "3", "output_per_mtok": "15"}],
    )
    session.commit()
    return session


def funded(session: Session, amount: str | None = "10.00", **kw: Any) -> Account:
    """A committed USD account, topped up by bank transfer when ``amount`` is given."""
    acc = create_account(session, name="C", currency="USD", **kw)
    if amount:
        method = "reseller" if kw.get("parent_id") else "bank_transfer"
        record_topup(session, acc.id, amount=amount, method=method)
    session.commit()
    return acc


def usage(rid: str, account: Account, *, at: datetime | None = None, **kw: Any) -> UsageIn:
    """A record of 1,000 output tokens (USD 0.015 at list) unless told otherwise."""
    tokens = Tokens(
        input_tokens=kw.pop("input_tokens", 0), output_tokens=kw.pop("output_tokens", 1000)
    )
    return UsageIn(
        id=rid,
        account_id=account.id,
        model=MODEL,
        occurred_at=at or utcnow(),
        tokens=tokens,
        **kw,
    )


def hold(session: Session, account: Account, output_tokens: int = 1000, **kw: Any):
    """Authorize a call of ``output_tokens`` output tokens (10 minutes unless told) and commit."""
    from datetime import timedelta

    from wallet.authorizations import authorize

    auth = authorize(
        session,
        account_id=account.id,
        model=MODEL,
        estimated_input_tokens=kw.pop("input_tokens", 0),
        max_output_tokens=output_tokens,
        ttl=kw.pop("ttl", timedelta(minutes=10)),
        **kw,
    )
    session.commit()
    return auth


def package(session: Session, tokens: int = 5000, price: str = "0.50", valid_days: int = 30):
    """A USD package ``pk`` (committed)."""
    catalog.create_package(
        session,
        id="pk",
        name="Pk",
        currency="USD",
        price=price,
        tokens=tokens,
        valid_days=valid_days,
    )
    session.commit()


def plan(session: Session, limit: int = 1, on_exhausted: str = "block", fee: str = "1.00"):
    """A USD plan ``p`` with one monthly window of ``limit`` requests (committed)."""
    catalog.create_plan(
        session,
        id="p",
        name="P",
        currency="USD",
        monthly_fee=fee,
        windows=[{"kind": "monthly", "unit": "requests", "limit": limit}],
        on_exhausted=on_exhausted,
    )
    session.commit()


def paid_cents(session: Session, account: Account) -> str:
    """The account's paid balance as a decimal string."""
    from wallet.balance import balance_of

    return balance_of(session, account).paid.format()
