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

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.orm import Session

_SHARED = text(
    "SELECT count(*) AS n, clock_timestamp() AS at FROM"
    " (SELECT pg_advisory_xact_lock_shared(k) FROM unnest(:keys) WITH ORDINALITY AS t(k, i)"
    " ORDER BY i) s"
).bindparams(bindparam("keys", type_=ARRAY(BIGINT)))

_EXCLUSIVE = text(
    "SELECT count(*) AS n, clock_timestamp() AS at FROM"
    " (SELECT pg_advisory_xact_lock(k) FROM unnest(:keys) WITH ORDINALITY AS t(k, i)"
    " ORDER BY i) s"
).bindparams(bindparam("keys", type_=ARRAY(BIGINT)))


def gate_key(billing_account_id: str) -> int:
    """The advisory-lock key of a billing tree (signed 64 bits, stable across processes)."""
    digest = hashlib.sha256(f"tokenwallet:usage-gate:{billing_account_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _keys(billing_account_ids: Iterable[str]) -> list[int]:
    return sorted({gate_key(a) for a in billing_account_ids})


def enter_shared(session: Session, billing_account_ids: Iterable[str]) -> datetime:
    """Take the shared gate of each billing tree (until the transaction ends) and return the
    database clock read after the locks were granted."""
    row = session.execute(_SHARED, {"keys": _keys(billing_account_ids)}).one()
    at: datetime = row.at
    return at.astimezone(UTC)


def enter_exclusive(session: Session, billing_account_id: str) -> datetime:
    """Wait until no usage batch of the tree is in flight, keep others out until the transaction
    ends, and return the database clock read after the lock was granted (the cut-off)."""
    row = session.execute(_EXCLUSIVE, {"keys": _keys([billing_account_id])}).one()
    at: datetime = row.at
    return at.astimezone(UTC)
