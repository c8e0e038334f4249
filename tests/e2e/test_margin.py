"""Upstream cost cards and the margin report over HTTP and the CLI on real PostgreSQL.

Each record is costed at its upstream's card in force when it occurred; revenue ties to the ledger;
expected figures computed here from the per-Mtok prices.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from api.cli import app as cli_app
from api.settings import get_settings
from ledger.base import utcnow
from tests.helpers import account_id, add_models, add_rate_card, key_headers, ok, price

T0 = datetime(2026, 1, 1, tzinfo=UTC)
M = Decimal(1_000_000)


def cost(*pairs: tuple[int, str]) -> Decimal:
    return sum((Decimal(n) * Decimal(p) / M for n, p in pairs), Decimal(0))


def cost_card(admin, upstream: str, effective_from: datetime, prices: list) -> dict:
    """Create a USD cost card of ``upstream``."""
    body = {
        "upstream": upstream,
        "currency": "USD",
        "effective_from": effective_from.isoformat(),
        "prices": prices,
    }
    return ok(admin.post("/v1/cost-cards", json=body))


@pytest.fixture
def setup(admin, engine):
    flex = {"flex": {"multiplier": "0.5"}}
    add_models(admin, "m-a", "m-b", provider="p")
    add_rate_card(admin, [price("m-a", "3", "15", service_tiers=flex), price("m-b", "1", "2")], T0)
    cost_card(admin, "direct", T0, [price("m-a", "2", "10", service_tiers=flex)])
    azure = cost_card(admin, "azure", T0, [price("m-a", "2.5", "12"), price("m-b", "0.5", "1")])
    # a later azure card changes m-b only and inherits m-a (it takes effect in the past: a
    # vendor's correction; cost cards bill nobody)
    later = cost_card(admin, "azure", utcnow() - timedelta(hours=1), [price("m-b", "0.6", "1.2")])
    assert {p["model"] for p in later["prices"]} == {"m-a", "m-b"} and azure["id"] != later["id"]
    return key_headers(engine, "gateway")


REVENUE = {
    "r1": cost((1000, "3"), (1000, "15")),
    "r2": cost((1000, "3"), (1000, "15")) / 2,  # flex on the rate card too
    "r3": cost((2000, "3"), (500, "15")),
    "r4": cost((4000, "1"), (1000, "2")),
    "r5": cost((1000, "3")),
}
COSTS = {
    "r1": cost((1000, "2"), (1000, "10")),
    "r2": cost((1000, "2"), (1000, "10")) / 2,
    "r3": cost((2000, "2.5"), (500, "12")),
    "r4": cost((4000, "0.6"), (1000, "1.2")),  # the later azure card
}


def send_at_two_upstreams(admin, gateway: dict) -> tuple[str, str]:
    """Records r1..r5 of two accounts at upstreams direct and azure (r5 at none); the accounts."""
    a1, a2 = account_id(admin, "10.00"), account_id(admin, "10.00")
    now = utcnow().isoformat()

    def rec(rid, acc, model, i, o, **kw):
        return {"id": rid, "account_id": acc, "model": model, "occurred_at": now,
                "input_tokens": i, "output_tokens": o, **kw}  # fmt: skip

    records = [
        rec("r1", a1, "m-a", 1000, 1000, upstream="direct"),
        rec("r2", a1, "m-a", 1000, 1000, upstream="direct", service_tier="flex"),
        rec("r3", a1, "m-a", 2000, 500, upstream="azure"),
        rec("r4", a2, "m-b", 4000, 1000, upstream="azure"),
        rec("r5", a2, "m-a", 1000, 0),  # no upstream: uncosted
    ]
    results = ok(admin.post("/v1/usage", json={"records": records}, headers=gateway), 200)
    assert [r["status"] for r in results["results"]] == ["charged"] * 5
    return a1, a2


def margin(admin, **params: str) -> dict:
    """The margin report of this month in USD, grouped as ``params`` say (by model unless said)."""
    params = {"period": f"{datetime.now(UTC):%Y-%m}", "currency": "USD", **params}
    return ok(admin.get("/v1/reports/margin", params=params), 200)


def check_by_model(admin) -> None:
    """By model: the totals tie to the ledger; m-a's uncosted record is counted apart."""
    by_model = margin(admin)
    assert by_model["summary"]["ties"] is True
    assert Decimal(by_model["summary"]["revenue"]) == sum(REVENUE.values())
    assert Decimal(by_model["summary"]["cost"]) == sum(COSTS.values())
    rows = {r["model"]: r for r in by_model["rows"]}
    ma_costed = REVENUE["r1"] + REVENUE["r2"] + REVENUE["r3"]
    ma_cost = COSTS["r1"] + COSTS["r2"] + COSTS["r3"]
    assert Decimal(rows["m-a"]["cost"]) == ma_cost
    assert Decimal(rows["m-a"]["margin"]) == ma_costed - ma_cost
    assert rows["m-a"]["uncosted_requests"] == 1
    assert Decimal(rows["m-a"]["uncosted_revenue"]) == REVENUE["r5"]
    assert Decimal(rows["m-b"]["margin"]) == REVENUE["r4"] - COSTS["r4"]


def test_margin_by_model_upstream_account_and_day_ties_to_the_ledger(admin, setup, engine):
    """Records at two upstreams, then the report by each dimension tied to the ledger."""
    _, a2 = send_at_two_upstreams(admin, setup)
    check_by_model(admin)
    up = {r["upstream"]: r for r in margin(admin, group_by="upstream")["rows"]}
    assert Decimal(up["direct"]["cost"]) == COSTS["r1"] + COSTS["r2"]
    assert Decimal(up["azure"]["cost"]) == COSTS["r3"] + COSTS["r4"]
    assert up["(none)"]["uncosted_requests"] == 1
    acc_rows = {r["account"]: r for r in margin(admin, group_by="account")["rows"]}
    assert Decimal(acc_rows[a2]["revenue"]) == REVENUE["r4"] + REVENUE["r5"]
    period = f"{datetime.now(UTC):%Y-%m}"
    by_day = admin.get(
        "/v1/reports/margin",
        params={"period": period, "currency": "USD", "group_by": "day", "format": "csv"},
    )
    assert by_day.status_code == 200
    header, row = by_day.text.splitlines()[:2]
    assert header.startswith("day,requests,revenue,cost,margin,margin_pct")
    assert row.split(",")[1] == "5"


def test_margin_from_the_cli_and_bad_cost_cards(admin, setup, database_url, monkeypatch):
    bad = admin.post(
        "/v1/cost-cards",
        json={
            "upstream": "azure",
            "currency": "USD",
            "effective_from": T0.isoformat(),  # the same instant as its first card
            "prices": [{"model": "m-a", "input_per_mtok": "1", "output_per_mtok": "1"}],
        },
    )
    assert bad.status_code == 409 and bad.json()["code"] == "conflict"
    unknown = admin.post(
        "/v1/cost-cards",
        json={
            "upstream": "x",
            "currency": "USD",
            "effective_from": T0.isoformat(),
            "prices": [{"model": "m-nope", "input_per_mtok": "1", "output_per_mtok": "1"}],
        },
    )
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_model"
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(
            cli_app,
            ["reports", "margin", "--period", f"{datetime.now(UTC):%Y-%m}", "--currency", "USD",
             "--group-by", "upstream"],
        )  # fmt: skip
        assert out.exit_code == 0, out.output
        report = json.loads(out.output)
        assert report["report"] == "margin" and report["summary"]["ties"] is True
    finally:
        get_settings.cache_clear()
