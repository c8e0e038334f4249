"""The checks every money-path test ends with.

The trial balance is zero per book, the prepaid-liability rollforward ties to the ledger in every
book, and the ledger and wallet audits (what ``tokenwallet db audit`` runs) find nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from invoicing.periods import Period
from invoicing.reports import prepaid_liability, trial_balance
from ledger.audit import find_violations as ledger_violations
from ledger.base import utcnow
from ledger.models import LedgerAccount
from wallet.audit import find_violations as wallet_violations


def assert_books_tie(
    session: Session, *, currency: str = "USD", at: Iterable[datetime] = ()
) -> None:
    """Trial balance zero, rollforwards tied, audits clean.

    Every book, every month of ``at`` and now.
    """
    now = utcnow()
    tb = trial_balance(session, currency=currency, as_of=now + timedelta(days=400))
    assert tb.summary["balanced"] is True, tb.summary
    books = set(
        session.scalars(select(LedgerAccount.book).where(LedgerAccount.unit == currency).distinct())
    )
    for period in {Period.containing(t) for t in [now, *at]}:
        for book in books:
            roll = prepaid_liability(session, period=period, currency=currency, book=book)
            assert roll.summary["ties"] is True, (period, book, roll.summary)
    problems = ledger_violations(session) + wallet_violations(session)
    assert problems == [], problems
