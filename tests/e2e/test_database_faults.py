"""Database faults over HTTP.

An unreachable database answers 503 ``database_unavailable`` with Retry-After and one log line per
outage; a connection lost during COMMIT answers 503 ``commit_unknown``, and replaying with the same
Idempotency-Key never applies a request twice.
"""

from __future__ import annotations

import logging

import psycopg
import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from tests.helpers import account, balance, rec, send


def lost_connection() -> OperationalError:
    return OperationalError(
        "COMMIT", {}, psycopg.OperationalError("server closed the connection unexpectedly")
    )


def test_a_lost_commit_answers_commit_unknown_and_a_replay_applies_once(admin, monkeypatch):
    acc = account(admin)
    real_commit = Session.commit

    def commit_then_lose_the_answer(self: Session) -> None:
        real_commit(self)  # the COMMIT reached the server: the top-up is saved
        raise lost_connection()

    monkeypatch.setattr(Session, "commit", commit_then_lose_the_answer)
    headers = {"Idempotency-Key": "topup-1"}
    body = {"amount": "5.00", "method": "bank_transfer"}
    resp = admin.post(f"/v1/accounts/{acc['id']}/topups", json=body, headers=headers)
    assert resp.status_code == 503, resp.text
    assert resp.json()["code"] == "commit_unknown"
    assert "Idempotency-Key" in resp.json()["detail"]
    assert resp.headers["retry-after"]
    monkeypatch.undo()

    replay = admin.post(f"/v1/accounts/{acc['id']}/topups", json=body, headers=headers)
    assert replay.status_code == 201, replay.text
    assert replay.headers.get("idempotent-replayed") == "true"
    assert balance(admin, acc)["paid"] == "5.00"


def test_a_lost_commit_of_usage_answers_commit_unknown_and_a_replay_charges_once(
    admin,
    gw,
    monkeypatch,
):
    acc = account(admin, "1.00")
    real_commit = Session.commit
    calls = {"n": 0}

    def commit_then_lose_the_answer(self: Session) -> None:
        real_commit(self)
        calls["n"] += 1
        raise lost_connection()

    monkeypatch.setattr(Session, "commit", commit_then_lose_the_answer)
    resp = admin.post("/v1/usage", json={"records": [rec("u1", acc)]}, headers=gw)
    assert resp.status_code == 503, resp.text
    assert resp.json()["code"] == "commit_unknown"
    assert calls["n"] == 1  # not retried behind the caller's back
    monkeypatch.undo()

    (again,) = send(admin, gw, rec("u1", acc))
    assert again["status"] == "duplicate"
    assert balance(admin, acc)["paid"] == "0.982"


def test_an_unreachable_database_answers_503_with_retry_after_logged_once(
    admin, monkeypatch, caplog
):
    acc = account(admin)
    from api import errors

    monkeypatch.setattr(errors, "_outage_logged_at", 0.0)

    def refuse(*args, **kwargs):
        raise lost_connection()

    monkeypatch.setattr(Session, "execute", refuse)
    monkeypatch.setattr(Session, "get", refuse)
    monkeypatch.setattr(Session, "scalars", refuse)
    monkeypatch.setattr(Session, "scalar", refuse)
    with caplog.at_level(logging.ERROR, logger="api.errors"):
        for _ in range(5):
            resp = admin.get(f"/v1/accounts/{acc['id']}/balance")
            assert resp.status_code == 503, resp.text
            assert resp.json()["code"] == "database_unavailable"
            assert int(resp.headers["retry-after"]) > 0
    outage_lines = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    assert len(outage_lines) == 1


@pytest.mark.parametrize("sqlstate_error", [psycopg.errors.SerializationFailure])
def test_a_failed_commit_on_a_live_connection_is_not_reported_as_unknown(
    admin, monkeypatch, sqlstate_error
):
    acc = account(admin)

    def conflict(self: Session) -> None:
        raise OperationalError("COMMIT", {}, sqlstate_error("could not serialize access"))

    monkeypatch.setattr(Session, "commit", conflict)
    resp = admin.post(
        f"/v1/accounts/{acc['id']}/topups", json={"amount": "1.00", "method": "bank_transfer"}
    )
    assert resp.status_code == 503, resp.text
    assert resp.json()["code"] == "concurrent_update"
    monkeypatch.undo()
    assert balance(admin, acc)["paid"] == "0.00"
