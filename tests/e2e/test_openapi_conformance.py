"""The OpenAPI document against the real server.

Schemathesis runs every operation of ``/schema/openapi.json`` against a served ``tokenwallet serve``
process with every built-in check (its default; ``--checks all`` would also override the
per-operation settings below), the examples, coverage, fuzzing and stateful phases, a bounded number
of examples and a fixed seed, and must report no failure (docs/openapi.md).

What is configured, and why:

* ``tests/e2e/schemathesis.toml``: a schema-valid request may be refused with 402, 404, 409 or
  422 (the data refuses it: unknown ids, no credit, card payments without Stripe keys); a 400
  to a schema-valid request stays a failure, except on the operations listed there, whose 400s
  depend on stored data (an amount finer than the account's currency allows, a catalog item in
  another currency); they are to become 422.
* ``POST /v1/api-keys/{key_id}/revoke`` runs last, on its own: with schemathesis' key it can
  revoke that very key (the server does not refuse that yet), after which every other
  operation only answers 401. It is tested all the same, in a second run with a key of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from api.auth import ApiKeyAuthMiddleware, create_key
from tests.e2e.served import Server
from tests.helpers import package, plan

pytestmark = pytest.mark.openapi

ST = Path(sys.executable).with_name("st")
CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = "25"
SEED = "20261129"
REVOKE = "^/v1/api-keys/[^/]+/revoke$"


def _seed(url: str, key: str) -> None:
    """A little data so operations get past their 404s.

    A model with a rate card, a funded account, a package and a plan.
    """
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:

        def post(path: str, body: dict[str, object]) -> dict[str, object]:
            resp = c.post(path, json=body)
            assert resp.status_code in (200, 201), (path, resp.text)
            return dict(resp.json())

        post("/v1/models", {"id": "m-large", "provider": "acme", "display_name": "M"})
        price = {"model": "m-large", "input_per_mtok": "3.00", "output_per_mtok": "15.00"}
        post(
            "/v1/rate-cards",
            {"currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "prices": [price]},
        )
        account = post("/v1/accounts", {"name": "Acme", "currency": "USD"})
        post(
            f"/v1/accounts/{account['id']}/topups",
            {"amount": "100.00", "method": "bank_transfer", "reference": "seed-1"},
        )
        post("/v1/packages", package("pk-1m", "1M", "9.00", 1_000_000))
        post("/v1/plans", plan("coder", "20.00", "wallet", ("monthly", "requests", 100)))


def _schemathesis(url: str, key: str, reports: Path, *selection: str) -> str:
    command = [
        str(ST),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{url}/schema/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        SEED,
        "--request-timeout",
        "30",
        "--report",
        "junit",
        "--report-dir",
        str(reports),
        *selection,
    ]
    env = {**os.environ, "NO_COLOR": "1"}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, cwd=reports
    )
    output = done.stdout + done.stderr
    (reports / f"schemathesis-{len(list(reports.glob('schemathesis-*')))}.txt").write_text(output)
    assert done.returncode == 0, f"schemathesis found failures:\n{output[-20000:]}"
    assert "Tested:" in output, output[-5000:]
    return output


def test_the_openapi_document_tells_the_truth(database_url, engine, tmp_path):
    ApiKeyAuthMiddleware._cache.clear()
    with Session(engine) as s:
        seeder = create_key(s, role="admin", description="seeds the conformance run").secret
        fuzzer = create_key(s, role="admin", description="schemathesis").secret
        revoker = create_key(s, role="admin", description="schemathesis, revoke only").secret
        s.commit()
    server = Server(database_url, tmp_path / "server.log")
    server.start()
    try:
        _seed(server.url, seeder)
        _schemathesis(server.url, fuzzer, tmp_path, "--exclude-path-regex", REVOKE)
        _schemathesis(server.url, revoker, tmp_path, "--include-path-regex", REVOKE)
        log = (tmp_path / "server.log").read_text()
        assert "Traceback" not in log, log[-10000:]
    finally:
        server.stop()
