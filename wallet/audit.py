"""Wallet invariants, re-derived from raw rows.

Per account, the lots of a kind (what is left plus what open authorizations reserve) sum to what its
ledger account holds (posted balance minus pending credit freezes, which take from the lots); each
lot's ``reserved`` is exactly what the open authorizations list for it; closed authorizations
reserve nothing.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

_LOTS_VS_LEDGER = text(
    """
    WITH lots AS (
        SELECT ledger_account_id, sum(remaining + reserved) AS remaining
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


_RESERVED_VS_AUTHORIZATIONS = text(
    """
    WITH held AS (
        SELECT (e ->> 0)::bigint AS lot_id, sum((e ->> 1)::numeric) AS atoms
        FROM wallet_authorizations a, jsonb_array_elements(a.reserved) e
        WHERE a.status = 'approved'
        GROUP BY 1
    )
    SELECT l.id, l.account_id, l.reserved, coalesce(h.atoms, 0) AS held
    FROM wallet_credit_lots l FULL JOIN held h ON h.lot_id = l.id
    WHERE coalesce(l.reserved, -1) <> coalesce(h.atoms, 0)
    LIMIT 20
    """
)

_CLOSED_AUTHORIZATIONS_HOLDING = text(
    """
    SELECT id, status FROM wallet_authorizations
    WHERE status <> 'approved'
      AND (reserved <> '[]'::jsonb OR reserved_quota <> '[]'::jsonb OR overage <> 0
           OR reseller_overage <> 0)
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
    """Where lots, authorizations and freezes disagree with the ledger; empty when all agree.

    Lot totals that disagree with their ledger accounts, lots whose reserved amount disagrees
    with the open authorizations, closed authorizations still reserving, and credit freezes
    whose ledger hold disagrees with their status.
    """
    return (
        [
            f"account {r.owner_id} {r.code}: lots hold {r.lots} atoms, the ledger {r.ledger}"
            for r in session.execute(_LOTS_VS_LEDGER)
        ]
        + [
            f"lot {r.id} of {r.account_id} says {r.reserved} atoms are reserved;"
            f" open authorizations hold {r.held}"
            for r in session.execute(_RESERVED_VS_AUTHORIZATIONS)
        ]
        + [
            f"authorization {r.id} is {r.status} but still reserves credit"
            for r in session.execute(_CLOSED_AUTHORIZATIONS_HOLDING)
        ]
        + [
            f"freeze {r.id} is {r.status} but its ledger hold is {r.resolution or 'pending'}"
            for r in session.execute(_FREEZES_VS_HOLDS)
        ]
    )
