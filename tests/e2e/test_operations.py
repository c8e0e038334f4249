"""Operations (issue 13, part 6) on real PostgreSQL.

The access log, the audit log and its API, business metrics on /metrics, quiet scheduler jobs, and
CLI commands that find no migrated database.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from api.auth import create_key
from api.cli import app as cli_app
from api.metrics import refresh_db_metrics
from api.scheduler import Job, run_locked, summary
from api.settings import get_settings
from ledger.base import utcnow
from tests.helpers import add_model_m, ok, problem
from wallet.accounts import create_account
from wallet.outbox import emit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def access_lines(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "tokenwallet.access"]


# -- access log ----------------------------------------------------------------------------


def test_access_log_is_one_json_line_per_request_without_secrets(admin, admin_key, caplog):
    caplog.set_level(logging.INFO, logger="tokenwallet.access")
    created = admin.post("/v1/api-keys", json={"role": "gateway"}, headers={"X-Request-Id": "r-1"})
    assert created.status_code == 201 and created.headers["x-request-id"] == "r-1"
    secret = created.json()["key"]
    admin.get("/v1/nowhere?token=abc")
    admin.get("/v1/api-keys", headers={"Authorization": "Bearer tw_adm_wrong"})
    lines = access_lines(caplog)
    assert [(x["method"], x["path"], x["status"]) for x in lines] == [
        ("POST", "/v1/api-keys", 201),
        ("GET", "/v1/nowhere", 404),
        ("GET", "/v1/api-keys", 401),
    ]
    first = lines[0]
    assert first["request_id"] == "r-1" and first["role"] == "admin"
    assert first["key_id"].startswith("key_") and first["duration_ms"] >= 0
    assert lines[2]["key_id"] is None  # not authenticated
    assert lines[1]["request_id"] != lines[2]["request_id"]
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "tokenwallet.access")
    assert secret not in text and admin_key not in text and "wrong" not in text
    assert "token=abc" not in text and '"role":"gateway"' not in text  # no query, no body


def test_a_request_id_that_is_not_a_short_token_is_replaced(admin, caplog):
    caplog.set_level(logging.INFO, logger="tokenwallet.access")
    resp = admin.get("/health", headers={"X-Request-Id": "x" * 65})
    assert resp.headers["x-request-id"] != "x" * 65
    assert access_lines(caplog)[-1]["request_id"] == resp.headers["x-request-id"]


@pytest.fixture
def sampled(engine):
    """An app that logs one in three successful gateway calls, and a gateway key.

    (Made before the test runs: Litestar configures logging when an app is built, which would drop
    the capture handler of a test that is already running.)
    """
    from litestar.testing import TestClient

    from api.app import create_app
    from api.settings import Settings

    with Session(engine) as s:
        gw = create_key(s, role="gateway")
        s.commit()
    app = create_app(engine, settings=Settings(tokenwallet_access_log_gateway_sample=3))
    with TestClient(app) as c:
        c.headers["Authorization"] = f"Bearer {gw.secret}"
        yield c


def test_gateway_calls_can_be_sampled_and_errors_are_always_logged(sampled, caplog):
    caplog.set_level(logging.INFO, logger="tokenwallet.access")
    for i in range(6):
        sampled.post("/v1/usage", json={"records": [{"id": f"r{i}", "account_id": "acc_x"}]})
    sampled.post("/v1/usage", content=b"{")
    lines = access_lines(caplog)
    assert [x["status"] for x in lines] == [200, 200, 400]
    assert lines[0]["sampled_1_in"] == 3


# -- audit log -----------------------------------------------------------------------------


def test_admin_and_finance_writes_are_audited_and_readable(admin, engine):
    acc = ok(admin.post("/v1/accounts", json={"name": "A", "currency": "USD"}))
    ok(
        admin.post(
            f"/v1/accounts/{acc['id']}/topups",
            json={"amount": "5.00", "method": "bank_transfer", "reference": "wire-1"},
        )
    )
    with Session(engine) as s:
        finance = create_key(s, role="finance")
        customer = create_key(s, role="customer", account_id=acc["id"])
        s.commit()
    fin = {"Authorization": f"Bearer {finance.secret}"}
    cust = {"Authorization": f"Bearer {customer.secret}"}
    # a customer's write is not an operator action; a failed request changed nothing
    ok(admin.post("/v1/webhook-endpoints", json={"url": "https://example.com/hook"}, headers=cust))
    problem(
        admin.post(
            f"/v1/accounts/{acc['id']}/topups",
            json={"amount": "-1", "method": "bank_transfer"},
            headers=fin,
        ),
        400,
        "invalid_amount",
    )
    events = ok(admin.get("/v1/audit-events", headers=fin), 200)["data"]
    assert [(e["action"], e["actor_role"]) for e in events] == [
        ("POST /v1/accounts", "admin"),
        ("POST /v1/accounts/{account_id}/topups", "admin"),
    ]
    assert events[0]["target_id"] == acc["id"]
    assert events[1]["changes"]["request"] == {
        "amount": "5.00",
        "method": "bank_transfer",
        "reference": "wire-1",
    }
    page = ok(admin.get("/v1/audit-events", params={"limit": 1}, headers=fin), 200)
    assert page["has_more"] and len(page["data"]) == 1
    rest = ok(
        admin.get(
            "/v1/audit-events", params={"starting_after": page["data"][0]["id"]}, headers=fin
        ),
        200,
    )
    assert [e["id"] for e in rest["data"]] == [events[1]["id"]]
    by_prefix = ok(admin.get("/v1/audit-events", params={"action": "POST /v1/accounts/*"}), 200)
    assert len(by_prefix["data"]) == 1
    future = (utcnow() + timedelta(hours=1)).isoformat()
    assert ok(admin.get("/v1/audit-events", params={"from": future}), 200)["data"] == []
    problem(admin.get("/v1/audit-events", headers=cust), 403, "forbidden")
    problem(
        admin.get("/v1/audit-events", params={"starting_after": str(2**64)}),
        400,
        "validation_error",
    )
    # the log is append-only in the database too
    with Session(engine) as s, pytest.raises(sa.exc.DBAPIError, match="append-only"):
        s.execute(sa.text("DELETE FROM audit_events"))


# -- metrics -------------------------------------------------------------------------------


def test_business_metrics_on_metrics(admin, engine, session_factory, monkeypatch, database_url):
    add_model_m(admin, T0)
    acc = ok(admin.post("/v1/accounts", json={"name": "A", "currency": "USD"}))
    declined = ok(
        admin.post(
            "/v1/authorizations",
            json={"account_id": acc["id"], "multi_capture": True, "amount": "1.00"},
        )
    )
    assert declined["decline_code"] == "insufficient_funds"
    with session_factory.begin() as s:
        other = create_account(s, name="B", currency="USD")
        emit(s, account_id=other.id, type="balance.low", data={"n": 1})
    # the ledger audit result, as the CLI records it
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        assert CliRunner().invoke(cli_app, ["db", "audit"]).exit_code == 0
    finally:
        get_settings.cache_clear()
    refresh_db_metrics(session_factory, force=True)
    text = admin.get("/metrics").text
    assert (
        'tokenwallet_authorizations_total{decline_code="insufficient_funds",operation="grant",'
        'result="declined"}' in text
    )
    assert "tokenwallet_webhook_backlog 1.0" in text
    assert "tokenwallet_webhook_dead_deliveries 0.0" in text
    assert "tokenwallet_ledger_audit_violations 0.0" in text
    assert "tokenwallet_db_metrics_up 1.0" in text
    assert "tokenwallet_stripe_events_failed 0.0" in text


# -- scheduler -----------------------------------------------------------------------------


def test_jobs_log_what_they_did_not_that_they_ran(session_factory, caplog):
    caplog.set_level(logging.DEBUG, logger="api.scheduler")
    assert run_locked(session_factory, Job("idle", 10, lambda s: []))
    assert run_locked(session_factory, Job("idle_report", 10, lambda s: {"a": 0, "b": []}))
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
    assert run_locked(session_factory, Job("busy", 10, lambda s: [1, 2, 3]))
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert line.startswith("job busy: 3 (")


def test_summary_words():
    assert summary(None) is None and summary(0) is None and summary({"x": 0}) is None
    assert summary({"delivered": 2, "failed": 0}) == "delivered=2"
    assert summary(["a", "b"]) == "2"


# -- CLI without a migrated database -------------------------------------------------------


def test_cli_without_a_database_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("TOKENWALLET_DATA_DIR", str(tmp_path / "elsewhere"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, ["create-key", "--role", "admin"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "tokenwallet db upgrade" in lines[0], result.output
    assert not (tmp_path / "elsewhere").exists()  # nothing was created


def test_cli_against_an_unmigrated_database_says_so_in_one_line(pg_server, monkeypatch):
    from sqlalchemy.engine import make_url

    from tests.conftest import _admin

    name = "tw_test_unmigrated"
    admin = _admin(pg_server)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        for args in (["create-key", "--role", "admin"], ["db", "audit"]):
            result = CliRunner().invoke(cli_app, args)
            assert result.exit_code == 2, result.output
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and "not migrated" in lines[0], result.output
            assert "tokenwallet db upgrade" in lines[0]
    finally:
        get_settings.cache_clear()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_a_close_is_audited(admin):
    period = (utcnow() - timedelta(days=62)).strftime("%Y-%m")
    ok(admin.post(f"/v1/billing-periods/{period}/close"), 200)
    (event,) = ok(admin.get("/v1/audit-events", params={"action": "billing.close"}), 200)["data"]
    assert event["target_id"] == period
    assert event["changes"] == {"finalize": True, "status": "closed", "invoices": 0}


def test_the_access_log_is_on_whatever_the_log_level(capsys):
    from api.logs import configure_logging

    access = logging.getLogger("tokenwallet.access")
    saved = (access.handlers[:], access.propagate, access.level)
    access.handlers.clear()
    try:
        configure_logging("WARNING")
        assert access.isEnabledFor(logging.INFO) and not access.propagate
        access.info('{"probe":1}')
        assert capsys.readouterr().err == '{"probe":1}\n'  # a bare JSON line
        configure_logging("WARNING", access_log=False)
        assert not access.isEnabledFor(logging.INFO)
    finally:
        access.handlers[:], access.propagate = saved[0], saved[1]
        access.setLevel(saved[2])
