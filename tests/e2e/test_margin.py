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
from tests.helpers import add_models, add_rate_card, new_key, ok, price

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
    return {"Authorization": f"Bearer {new_key(engine, 'gateway')}"}


def account(admin) -> str:
    acc = ok(admin.post("/v1/accounts", json={"name": "C", "currency": "USD"}))["id"]
    ok(
        admin.post(
            f"/v1/accounts/{acc}/topups", json={"amount": "10.00", "method": "bank_transfer"}
        )
    )
    return str(acc)


def test_margin_by_model_upstream_account_and_day_ties_to_the_ledger(admin, setup, engine):
    """Records at two upstreams, then the report by each dimension tied to the ledger.

    One story, over 60 lines on purpose.
    """
    a1, a2 = account(admin), account(admin)
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
    results = ok(admin.post("/v1/usage", json={"records": records}, headers=setup), 200)
    assert [r["status"] for r in results["results"]] == ["charged"] * 5
    period = f"{datetime.now(UTC):%Y-%m}"
    revenue = {
        "r1": cost((1000, "3"), (1000, "15")),
        "r2": cost((1000, "3"), (1000, "15")) / 2,  # flex on the rate card too
        "r3": cost((2000, "3"), (500, "15")),
        "r4": cost((4000, "1"), (1000, "2")),
        "r5": cost((1000, "3")),
    }
    costs = {
        "r1": cost((1000, "2"), (1000, "10")),
        "r2": cost((1000, "2"), (1000, "10")) / 2,
        "r3": cost((2000, "2.5"), (500, "12")),
        "r4": cost((4000, "0.6"), (1000, "1.2")),  # the later azure card
    }
    by_model = ok(
        admin.get("/v1/reports/margin", params={"period": period, "currency": "USD"}), 200
    )
    assert by_model["summary"]["ties"] is True
    assert Decimal(by_model["summary"]["revenue"]) == sum(revenue.values())
    assert Decimal(by_model["summary"]["cost"]) == sum(costs.values())
    rows = {r["model"]: r for r in by_model["rows"]}
    ma_costed = revenue["r1"] + revenue["r2"] + revenue["r3"]
    ma_cost = costs["r1"] + costs["r2"] + costs["r3"]
    assert Decimal(rows["m-a"]["cost"]) == ma_cost
    assert Decimal(rows["m-a"]["margin"]) == ma_costed - ma_cost
    assert rows["m-a"]["uncosted_requests"] == 1
    assert Decimal(rows["m-a"]["uncosted_revenue"]) == revenue["r5"]
    assert Decimal(rows["m-b"]["margin"]) == revenue["r4"] - costs["r4"]
    by_upstream = ok(
        admin.get(
            "/v1/reports/margin",
            params={"period": period, "currency": "USD", "group_by": "upstream"},
        ),
        200,
    )
    up = {r["upstream"]: r for r in by_upstream["rows"]}
    assert Decimal(up["direct"]["cost"]) == costs["r1"] + costs["r2"]
    assert Decimal(up["azure"]["cost"]) == costs["r3"] + costs["r4"]
    assert up["(none)"]["uncosted_requests"] == 1
    by_account = ok(
        admin.get(
            "/v1/reports/margin",
            params={"period": period, "currency": "USD", "group_by": "account"},
        ),
        200,
    )
    acc_rows = {r["account"]: r for r in by_account["rows"]}
    assert Decimal(acc_rows[a2]["revenue"]) == revenue["r4"] + revenue["r5"]
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
