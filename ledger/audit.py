"""Whole-ledger checks and the trial balance.

:func:`find_violations` re-derives every invariant from the raw rows; the test suite runs it
after every integration test, and operators can run it on a live database (``tokenwallet db
audit``). :func:`trial_balance` sums balances per book, unit and account type as of a moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from ledger.amounts import Amount
from ledger.units import unit as unit_of

_UNBALANCED = text(
    """
    SELECT entry_id, book, unit, sum(amount) AS off
    FROM ledger_postings
    GROUP BY entry_id, book, unit, (phase = 0)
    HAVING sum(amount) <> 0
    LIMIT 20
    """
)

_CACHE_MISMATCH = text(
    """
    WITH sums AS (
        SELECT account_id,
            sum(CASE WHEN phase = 0 AND amount > 0 THEN amount ELSE 0 END) AS dp,
            sum(CASE WHEN phase = 0 AND amount < 0 THEN -amount ELSE 0 END) AS cp,
            sum(CASE WHEN phase = 1 AND amount > 0 THEN amount
                     WHEN phase = 2 AND amount < 0 THEN amount ELSE 0 END) AS dpend,
            sum(CASE WHEN phase = 1 AND amount < 0 THEN -amount
                     WHEN phase = 2 AND amount > 0 THEN -amount ELSE 0 END) AS cpend
        FROM ledger_postings GROUP BY account_id
    )
    SELECT a.id, a.code
    FROM ledger_accounts a LEFT JOIN sums s ON s.account_id = a.id
    WHERE a.track_balance AND (
        a.debits_posted <> coalesce(s.dp, 0) OR a.credits_posted <> coalesce(s.cp, 0)
        OR a.debits_pending <> coalesce(s.dpend, 0) OR a.credits_pending <> coalesce(s.cpend, 0))
    LIMIT 20
    """
)

_NEGATIVE = text(
    """
    SELECT id, code FROM ledger_accounts
    WHERE forbid_negative AND CASE WHEN type IN ('asset', 'expense', 'contra_revenue')
        THEN debits_posted - credits_posted - credits_pending < 0
        ELSE credits_posted - debits_posted - debits_pending < 0 END
    LIMIT 20
    """
)

_RESOLVED_TWICE = text(
    "SELECT hold_id FROM ledger_entries WHERE hold_id IS NOT NULL"
    " GROUP BY hold_id HAVING count(*) > 1 LIMIT 20"
)


def find_violations(session: Session) -> list[str]:
    """Every broken ledger invariant, described for a person; an empty list means all hold."""
    problems: list[str] = []
    for r in session.execute(_UNBALANCED):
        problems.append(f"entry {r.entry_id} unbalanced in book {r.book} {r.unit} by {r.off}")
    for r in session.execute(_CACHE_MISMATCH):
        problems.append(f"account {r.id} ({r.code}) cached balance differs from its postings")
    for r in session.execute(_NEGATIVE):
        problems.append(f"account {r.id} ({r.code}) is below zero but forbids it")
    for r in session.execute(_RESOLVED_TWICE):
        problems.append(f"hold {r.hold_id} resolved more than once")
    return problems


@dataclass(frozen=True, slots=True)
class TrialBalanceRow:
    """Debit-positive net of all posted amounts for one book, unit and account type."""

    book: str
    unit: str
    account_type: str
    net: Amount


def trial_balance(
    session: Session, *, unit: str | None = None, as_of: datetime | None = None
) -> list[TrialBalanceRow]:
    """Posted balances summed per book, unit and account type (debits positive).

    In a correct ledger the rows of each book and unit sum to zero.
    """
    rows = session.execute(
        text(
            """
            SELECT p.book, p.unit, a.type, sum(p.amount) AS net
            FROM ledger_postings p
            JOIN ledger_accounts a ON a.id = p.account_id
            JOIN ledger_entries e ON e.id = p.entry_id
            WHERE p.phase = 0
              AND (CAST(:unit AS text) IS NULL OR p.unit = :unit)
              AND (CAST(:as_of AS timestamptz) IS NULL OR e.created_at <= :as_of)
            GROUP BY p.book, p.unit, a.type
            ORDER BY p.book, p.unit, a.type
            """
        ),
        {"unit": unit, "as_of": as_of},
    )
    return [
        TrialBalanceRow(r.book, r.unit, r.type, Amount(int(r.net), unit_of(r.unit))) for r in rows
    ]
