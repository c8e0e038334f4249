from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy.orm import Session

from ledger.accounts import AccountRef, open_account
from ledger.amounts import Amount
from ledger.journal import post_entry, transfer
from ledger.models import AccountType
from ledger.units import currency

USD = currency("USD")


def usd(value: str) -> Amount:
    return Amount.parse(value, USD)


@dataclass
class Chart:
    cash: AccountRef
    prepaid: AccountRef
    revenue: AccountRef
    promotions: AccountRef


def make_chart(session: Session, owner: str = "cust_1") -> Chart:
    return Chart(
        cash=open_account(session, code="cash:bank", type=AccountType.ASSET, unit=USD),
        prepaid=open_account(
            session,
            code="customer:prepaid",
            type=AccountType.LIABILITY,
            unit=USD,
            owner_id=owner,
            forbid_negative=True,
        ),
        revenue=open_account(
            session, code="revenue:usage", type=AccountType.REVENUE, unit=USD, track_balance=False
        ),
        promotions=open_account(
            session, code="promotions", type=AccountType.CONTRA_REVENUE, unit=USD
        ),
    )


@pytest.fixture
def chart(session: Session) -> Chart:
    c = make_chart(session)
    session.commit()
    return c


def top_up(session: Session, chart: Chart, value: str) -> None:
    post_entry(session, transfer(chart.cash, chart.prepaid, usd(value)), description="top-up")
