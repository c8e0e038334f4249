"""Wallet invariants, re-derived from raw rows: per account, the lots of a kind sum to what its
ledger account can spend (posted balance minus pending holds, which reserve from the lots)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

_LOTS_VS_LEDGER = text(
    """
    WITH lots AS (
        SELECT ledger_account_id, sum(remaining) AS remaining
        FROM wallet_credit_lots GROUP BY ledger_account_id
    )
    SELECT a.id, a.code, a.owner_id, coalesce(l.remaining, 0) AS lots,
           a.credits_posted - a.debits_posted - a.debits_pending AS ledger
    FROM ledger_accounts a LEFT JOIN lots l ON l.ledger_account_id = a.id
    JOIN wallet_accounts w ON w.id = a.owner_id
    WHERE a.code IN ('customer:prepaid', 'customer:bonus', 'customer:package_tokens')
      AND coalesce(l.remaining, 0) <> a.credits_posted - a.debits_posted - a.debits_pending
    LIMIT 20
    """
)


_FREEZES_VS_HOLDS = text(
    """
    SELECT f.id, f.status, r.kind AS resolution
    FROM wallet_credit_freezes f
    LEFT JOIN ledger_entries r ON r.hold_id = f.hold_entry_id
    WHERE f.hold_entry_id IS NOT NULL
      AND ((f.status = 'frozen') <> (r.id IS NULL)
           OR (f.status = 'forfeited' AND r.kind <> 'hold_post'))
    LIMIT 20
    """
)


def find_violations(session: Session) -> list[str]:
    """Lot totals that disagree with their ledger accounts, and credit freezes whose ledger hold
    disagrees with their status; empty when all agree."""
    return [
        f"account {r.owner_id} {r.code}: lots hold {r.lots} atoms, the ledger {r.ledger}"
        for r in session.execute(_LOTS_VS_LEDGER)
    ] + [
        f"freeze {r.id} is {r.status} but its ledger hold is {r.resolution or 'pending'}"
        for r in session.execute(_FREEZES_VS_HOLDS)
    ]
