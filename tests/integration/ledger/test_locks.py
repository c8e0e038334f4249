"""Advisory-lock keys: Python's ``lock_key`` and the database's ``tw_lock_key`` are one scheme.

A lock taken through one blocks a transaction taking it through the other.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from ledger.locks import lock_key, xact_lock


@pytest.mark.parametrize(
    ("scope", "name"),
    [("usage-gate", "acc_0187a3"), ("catalog", "USD"), ("bank-reference", "Überweisung 7")],
)
def test_python_and_sql_compute_the_same_key(session: Session, scope: str, name: str):
    in_sql = session.scalar(text("SELECT tw_lock_key(:s, :n)"), {"s": scope, "n": name})
    assert in_sql == lock_key(scope, name)


def test_a_lock_taken_in_python_is_the_lock_sql_takes(session_factory: sessionmaker[Session]):
    with session_factory.begin() as holder:
        xact_lock(holder, [lock_key("catalog", "EUR"), lock_key("catalog", "USD")], shared=True)
        with session_factory.begin() as other:
            taken = other.scalar(
                select(func.pg_try_advisory_xact_lock(func.tw_lock_key("catalog", "USD")))
            )
            shared = other.scalar(
                select(func.pg_try_advisory_xact_lock_shared(func.tw_lock_key("catalog", "USD")))
            )
    assert (taken, shared) == (False, True)
