"""The usage gate: an exact boundary between charged usage and the month-end close.

Every usage batch takes a *shared* transaction-level advisory lock per billing tree it charges
(a top-level account and its sub-accounts), then reads ``received_at`` from the database clock.
The close of a billing account takes the same lock *exclusively* and then reads its cut-off from
the same clock. So a record is either committed before the close reads (and its ``received_at``
is at or before the cut-off), or it is written after the close committed (and its
``received_at`` is later than the cut-off): no record can be missed or counted twice by
selecting ``received_at <= cutoff`` on one invoice and ``> cutoff`` on the next.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.orm import Session

from ledger.locks import lock_key, xact_lock

#: the lock scope of a billing tree (``tw_lock_key('usage-gate', id)`` in SQL)
GATE = "usage-gate"


def enter_shared(session: Session, billing_account_ids: Iterable[str]) -> datetime:
    """Take the shared gate of each billing tree, until the transaction ends.

    Returns:
        The database clock read after the locks were granted.
    """
    return xact_lock(session, (lock_key(GATE, a) for a in billing_account_ids), shared=True)


def enter_exclusive(session: Session, billing_account_id: str) -> datetime:
    """Wait until no usage batch of the tree is in flight; keep others out until the end.

    Returns:
        The database clock read after the lock was granted (the close's cut-off).
    """
    return xact_lock(session, [lock_key(GATE, billing_account_id)])
