"""Importing LiteLLM's bundled price map over HTTP and the CLI on real PostgreSQL.

The map is the real ``litellm`` package's file. A dry run writes nothing and reports what is
refused and why; an import creates the models and one card whose prices rate like LiteLLM's own
cost calculator.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from api.cli import app as cli_app
from api.pricemaps import bundled_map_path
from api.settings import get_settings
from ledger.base import utcnow
from tests.helpers import ok

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def counts(engine):
    with engine.connect() as c:
        return (
            c.execute(sa.text("SELECT count(*) FROM catalog_models")).scalar_one(),
            c.execute(sa.text("SELECT count(*) FROM catalog_rate_cards")).scalar_one(),
        )


def per_mtok(value: float) -> Decimal:
    """The test's own reading of a LiteLLM float: its shortest decimal, per million."""
    return Decimal(repr(value)) * 1_000_000


@pytest.fixture(scope="module")
def bundled():
    return json.loads(bundled_map_path().read_text())


def test_dry_run_of_the_bundled_map_writes_nothing_and_says_what_it_refuses(admin, engine, bundled):
    before = counts(engine)
    report = ok(
        admin.post(
            "/v1/rate-cards/import-litellm",
            json={"bundled": True, "effective_from": (utcnow() + timedelta(hours=1)).isoformat()},
        ),
        200,
    )
    assert counts(engine) == before
    assert report["applied"] is False and report["card_id"] is None
    assert "half-even" in report["rounding_rule"]
    refused = {r["model"]: r["reason"] for r in report["refused"]}
    imported = report["counts"]["added"]
    # every model of the map is imported, refused, or skipped: none is lost
    assert imported + len(refused) == len(bundled) - 1  # less sample_spec
    image_models = [m for m, v in bundled.items() if v.get("mode") == "image_generation"]
    assert image_models and all("not priced per token" in refused[m] for m in image_models)
    assert report["counts"]["new_models"] == imported


def test_import_creates_models_and_a_card_that_rates_like_litellm(admin, engine, bundled):
    import litellm

    start = utcnow() + timedelta(minutes=10)
    report = ok(
        admin.post(
            "/v1/rate-cards/import-litellm",
            json={
                "bundled": True,
                "providers": ["openai", "anthropic"],
                "effective_from": start.isoformat(),
                "dry_run": False,
            },
        ),
        200,
    )
    assert report["applied"] and report["card_id"]
    card = ok(admin.get(f"/v1/rate-cards/{report['card_id']}"), 200)
    prices = {p["model"]: p for p in card["prices"]}
    gpt = bundled["gpt-4o"]
    assert Decimal(prices["gpt-4o"]["input_per_mtok"]) == per_mtok(gpt["input_cost_per_token"])
    assert Decimal(prices["gpt-4o"]["service_tiers"]["priority"]["output_per_mtok"]) == per_mtok(
        gpt["output_cost_per_token_priority"]
    )
    # usage on an imported model is charged what LiteLLM's own calculator says
    acc = ok(admin.post("/v1/accounts", json={"name": "C", "currency": "USD"}), 201)
    ok(
        admin.post(
            f"/v1/accounts/{acc['id']}/topups", json={"amount": "100.00", "method": "bank_transfer"}
        ),
        201,
    )
    sonnet = next(m for m in ("claude-sonnet-4-5", "claude-sonnet-4-20250514") if m in prices)
    cases = [("gpt-4o", 12345, 678), (sonnet, 250_000, 1000), (sonnet, 1000, 50)]
    records = [
        {
            "id": f"imp-{i}",
            "account_id": acc["id"],
            "model": model,
            "occurred_at": (start + timedelta(minutes=1)).isoformat(),
            "input_tokens": p,
            "output_tokens": c,
        }
        for i, (model, p, c) in enumerate(cases)
    ]
    # the card takes effect in ten minutes: rate with the service layer at that instant
    from api.routes.usage_records import parse_records
    from wallet.charging import charge_batch

    with Session(engine) as s:
        results = charge_batch(s, parse_records(records), now=start + timedelta(minutes=2))
        s.commit()
    for (model, p, c), r in zip(cases, results, strict=True):
        assert r.status == "charged", r
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model, prompt_tokens=p, completion_tokens=c
        )
        theirs = Decimal(repr(prompt_cost + completion_cost))
        ours = Decimal(r.billed.format())
        assert abs(ours - theirs) < Decimal("1e-12"), (model, p, ours, theirs)


def test_cli_dry_run_and_strict(database_url, monkeypatch, engine, tmp_path):
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        out = runner.invoke(cli_app, ["catalog", "import-litellm", "--bundled"])
        assert out.exit_code == 0, out.output
        assert "dry run (nothing written)" in out.output
        assert "refused" in out.output and "not priced per token" in out.output
        tiny = {
            "m-round": {
                "litellm_provider": "openai",
                "mode": "chat",
                "input_cost_per_token": 1.6666666666666667e-07,
                "output_cost_per_token": 1e-06,
            },
            "m-fine": {"litellm_provider": "openai", "input_cost_per_token": 3e-06},
            "m-img": {"litellm_provider": "openai", "mode": "image_generation"},
        }
        path = tmp_path / "map.json"
        path.write_text(json.dumps(tiny))
        out = runner.invoke(cli_app, ["catalog", "import-litellm", str(path), "--json"])
        report = json.loads(out.output)
        flagged = {f["model"]: f["flags"] for f in report["flagged"]}
        assert any(f.startswith("rounded") for f in flagged["m-round"])
        strict = runner.invoke(
            cli_app, ["catalog", "import-litellm", str(path), "--json", "--strict", "--apply"]
        )
        report = json.loads(strict.output)
        assert {r["model"] for r in report["refused"]} == {"m-round", "m-img"}
        assert report["applied"] and counts(engine)[1] == 1
    finally:
        get_settings.cache_clear()
