"""Advisory locks: one key scheme for every transaction lock the application takes.

A key is the first 64 bits (signed) of SHA-256 of ``tokenwallet:<part>:<part>...``. The database
computes the same key with ``tw_lock_key(scope, id)`` (migration 0009) where SQL needs it (the
usage gate of a billing tree, the catalog lock of a currency), so a lock taken in Python and one
taken in SQL on the same ``(scope, id)`` are the same lock.

Scopes in use: ``usage-gate`` (a billing tree), ``catalog`` (a currency), ``bank-reference``,
``idempotency-key`` (a ledger entry's key, also taken by invoice payments on their reference),
``stripe-payment-intent``, and the scheduler's job names (a single part).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.orm import Session

#: the scope of a ledger entry's idempotency key
IDEMPOTENCY_KEY = "idempotency-key"


_EXCLUSIVE = text(
    "SELECT count(*) AS n, clock_timestamp() AS at FROM"
    " (SELECT pg_advisory_xact_lock(k) FROM unnest(:keys) WITH ORDINALITY AS t(k, i)"
    " ORDER BY i) s"
).bindparams(bindparam("keys", type_=ARRAY(BIGINT)))

_SHARED = text(
    "SELECT count(*) AS n, clock_timestamp() AS at FROM"
    " (SELECT pg_advisory_xact_lock_shared(k) FROM unnest(:keys) WITH ORDINALITY AS t(k, i)"
    " ORDER BY i) s"
).bindparams(bindparam("keys", type_=ARRAY(BIGINT)))


def lock_key(*parts: str) -> int:
    """The advisory-lock key of a thing (signed 64 bits, stable across processes).

    Args:
        parts: a scope and an id (``lock_key("usage-gate", account_id)``, equal to the
            database's ``tw_lock_key('usage-gate', account_id)``), or a single name.
    """
    digest = hashlib.sha256(":".join(("tokenwallet", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def xact_lock(session: Session, keys: Iterable[int], *, shared: bool = False) -> datetime:
    """Take transaction-level advisory locks, in key order, and read the database clock.

    The keys are deduplicated and sorted, so two transactions that lock overlapping sets never
    deadlock on them. The locks are held until the transaction ends.

    Args:
        session: the transaction that holds the locks.
        keys: lock keys from :func:`lock_key`.
        shared: take shared locks (exclusive ones wait for every shared holder to finish).

    Returns:
        The database clock (``clock_timestamp()``) read after every lock was granted.
    """
    row = session.execute(_SHARED if shared else _EXCLUSIVE, {"keys": sorted(set(keys))}).one()
    at: datetime = row.at
    return at.astimezone(UTC)


def lock_idempotency_keys(session: Session, keys: Iterable[str]) -> None:
    """Serialize writers of the same ledger idempotency keys (until the transaction ends)."""
    xact_lock(session, (lock_key(IDEMPOTENCY_KEY, k) for k in keys))
