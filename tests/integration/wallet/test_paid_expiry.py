"""Paid credit may be given an expiry only where the operator's terms allow it.

It is refused by default, changing nothing; at expiry its unspent part is booked to
``revenue:breakage`` and the prepaid-liability rollforward shows it as expired paid credit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from invoicing.periods import Period
from invoicing.reports import prepaid_liability
from ledger.models import JournalEntry, LedgerAccount, Posting
from tests.books import assert_books_tie
from wallet.accounts import create_account
from wallet.balance import balance_of
from wallet.charging import charge_batch
from wallet.lots import expire_lots
from wallet.models import Account, CreditLot, Topup
from wallet.topups import PaidExpiryNotAllowed, record_topup

from .conftest import usage

AT = datetime(2026, 5, 3, 12, tzinfo=UTC)


def test_paid_credit_with_an_expiry_is_refused_by_default_and_nothing_changes(session: Session):
    acc = create_account(session, name="C", currency="USD")
    session.commit()
    entries = session.scalar(select(func.count()).select_from(JournalEntry))
    with pytest.raises(PaidExpiryNotAllowed):
        record_topup(
            session, acc.id, amount="10.00", method="bank_transfer", paid_expires_in_days=30
        )
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Topup)) == 0
    assert session.scalar(select(func.count()).select_from(JournalEntry)) == entries


def test_paid_credit_expires_to_breakage_where_the_terms_allow_it(priced: Session):
    acc = create_account(priced, name="C", currency="USD")
    t = record_topup(
        priced,
        acc.id,
        amount="10.00",
        method="bank_transfer",
        at=AT,
        paid_expires_in_days=30,
        paid_expiry_allowed=True,
    ).topup
    priced.commit()
    lot = priced.get_one(CreditLot, t.paid_lot_id)
    assert lot.expires_at == AT + timedelta(days=30)
    # 1,000 output tokens = 0.015 spent before it expires
    (r,) = charge_batch(
        priced, [usage("u1", acc, at=AT + timedelta(days=1))], now=AT + timedelta(days=1)
    )
    assert r.status == "charged"
    priced.commit()
    assert expire_lots(priced, now=AT + timedelta(days=30)) == [lot.id]
    priced.commit()
    priced.expire_all()
    assert balance_of(priced, priced.get_one(Account, acc.id)).paid.format() == "0.00"
    may = prepaid_liability(priced, period=Period(2026, 5), currency="USD")
    june = prepaid_liability(priced, period=Period(2026, 6), currency="USD")
    assert may.summary["ties"] is True and june.summary["ties"] is True
    lines = {r["line"]: r for r in june.rows}
    assert lines["expired"]["paid"] == "-9.985"
    breakage = priced.execute(
        select(func.coalesce(-func.sum(Posting.amount), 0))
        .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
        .where(LedgerAccount.code == "revenue:breakage", LedgerAccount.book == "operator")
    ).scalar_one()
    assert breakage == 9_985 * 10**15  # the unspent 9.985, exactly
    assert_books_tie(priced, at=[AT, AT + timedelta(days=30)])
