"""Gateway hot-path benchmarks, driven over HTTP against ``tokenwallet serve`` on embedded
PostgreSQL, each with pgbench TPC-B on the same server as a baseline.

Run one (writes ``bench/results/<name>.json``)::

    .venv/bin/python -m bench.hotpath ingest            # 4 clients, 1,000-record batches
    .venv/bin/python -m bench.hotpath hot-wallet        # the same, all on one account
    .venv/bin/python -m bench.hotpath authorize-settle  # 32 clients: authorize + settle
    .venv/bin/python -m bench.hotpath overdraft         # 64 clients race one account
    .venv/bin/python -m bench.hotpath all

``--seconds`` shortens the timed runs (default 60).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.harness import Server, pgbench_tpcb, serve, write_result

MODEL = "bench-model"
#: HTTP worker processes of the server under test (``--workers``).
WORKERS = 1
PRICE_IN, PRICE_OUT = "3", "15"


class Api:
    """A keep-alive HTTP client for one process."""

    def __init__(self, url: str, key: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = body if isinstance(body, bytes | None) else json.dumps(body).encode()
        self.conn.request(method, path, body=payload, headers=self.headers)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else None


def setup(server: Server, accounts: int, funds: str) -> tuple[str, list[str]]:
    """Catalog, accounts and funds through the service layer on the same database; returns a
    gateway key and the account ids."""
    admin = server.cli("create-key", "--role", "admin")
    gateway = server.cli("create-key", "--role", "gateway")
    api = Api(server.url, admin)
    api.call("POST", "/v1/models", {"id": MODEL, "provider": "bench", "display_name": "Bench"})
    api.call(
        "POST",
        "/v1/rate-cards",
        {
            "currency": "USD",
            "effective_from": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
            "prices": [{"model": MODEL, "input_per_mtok": PRICE_IN, "output_per_mtok": PRICE_OUT}],
        },
    )
    ids = bulk_accounts(server, accounts, funds)
    return gateway, ids


def bulk_accounts(server: Server, n: int, funds: str) -> list[str]:
    """Create and fund ``n`` accounts in a few large transactions (setup, not measured)."""
    os.environ["DATABASE_URL"] = (
        f"postgresql+psycopg://postgres@/tokenwallet?host={server.socket_dir}"
    )
    from sqlalchemy.orm import Session

    from api.db import make_engine
    from wallet.accounts import create_account
    from wallet.topups import record_topup

    engine = make_engine(os.environ["DATABASE_URL"], pool_size=1)
    ids: list[str] = []
    for start in range(0, n, 1000):
        with Session(engine) as s:
            for _ in range(start, min(n, start + 1000)):
                a = create_account(s, name="bench", currency="USD")
                record_topup(s, a.id, amount=funds, method="bank_transfer")
                ids.append(a.id)
            s.commit()
    engine.dispose()
    return ids


def _record(
    rid: str, account: str, out_tokens: int = 500, auth: str | None = None
) -> dict[str, Any]:
    rec = {
        "id": rid,
        "account_id": account,
        "model": MODEL,
        "occurred_at": datetime.now(UTC).isoformat(),
        "input_tokens": 1000,
        "output_tokens": out_tokens,
    }
    if auth:
        rec["authorization_id"] = auth
    return rec


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# -- workers (separate processes) ------------------------------------------------------------


def _ingest_worker(args: tuple[str, str, list[str], int, float, int]) -> dict[str, Any]:
    url, key, accounts, batch, deadline, seed = args
    api = Api(url, key)
    latencies, records, rejected, n = [], 0, 0, 0
    prefix = f"{seed}-{uuid.uuid4().hex[:8]}"
    while time.time() < deadline:
        body = {
            "records": [
                _record(f"{prefix}-{n}-{i}", accounts[(n * batch + i * 7 + seed) % len(accounts)])
                for i in range(batch)
            ]
        }
        t = time.perf_counter()
        status, out = api.call("POST", "/v1/usage", body)
        latencies.append(time.perf_counter() - t)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {out}")
        records += sum(1 for r in out["results"] if r["status"] == "charged")
        rejected += sum(1 for r in out["results"] if r["status"] == "rejected")
        n += 1
    return {"latencies": latencies, "records": records, "rejected": rejected}


def _auth_worker(args: tuple[str, str, list[str], float, int]) -> dict[str, Any]:
    url, key, accounts, deadline, seed = args
    api = Api(url, key)
    lat, holds, n = [], 0, 0
    while time.time() < deadline:
        account = accounts[(seed * 7919 + n) % len(accounts)]
        t = time.perf_counter()
        status, a = api.call(
            "POST",
            "/v1/authorizations",
            {
                "account_id": account,
                "model": MODEL,
                "estimated_input_tokens": 1000,
                "max_output_tokens": 1000,
            },
        )
        if status != 201 or a["status"] != "approved":
            raise RuntimeError(f"authorize failed: {status} {a}")
        status, out = api.call(
            "POST",
            "/v1/usage",
            {"records": [_record(f"a{seed}-{n}-{uuid.uuid4().hex[:6]}", account, 400, a["id"])]},
        )
        if status != 200 or out["results"][0]["status"] != "charged":
            raise RuntimeError(f"settle failed: {status} {out}")
        lat.append(time.perf_counter() - t)
        holds += 1
        n += 1
    return {"latencies": lat, "holds": holds}


def _overdraft_worker(args: tuple[str, str, str, int, int]) -> dict[str, int]:
    url, key, account, attempts, seed = args
    api = Api(url, key)
    ok = refused = 0
    for n in range(attempts):
        status, out = api.call(
            "POST", "/v1/usage", {"records": [_record(f"o{seed}-{n}", account, out_tokens=1000)]}
        )
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {out}")
        if out["results"][0]["status"] == "charged":
            ok += 1
        else:
            refused += 1
    return {"ok": ok, "refused": refused}


def _pool_run(fn: Callable[[Any], Any], args: list[Any]) -> list[Any]:
    ctx = mp.get_context("spawn")
    with ctx.Pool(len(args)) as pool:
        return pool.map(fn, args)


# -- benchmarks -----------------------------------------------------------------------------


def _baseline(server: Server, clients: int) -> dict[str, Any]:
    return pgbench_tpcb(server.socket_dir, clients=clients, seconds=15)


def _ingest(name: str, n_accounts: int, seconds: int, target: int) -> None:
    with serve(workers=WORKERS) as server:
        baseline = _baseline(server, 4)
        gateway, accounts = setup(server, n_accounts, "100000.00")
        # warm up (imports, caches, connection pool)
        _ingest_worker((server.url, gateway, accounts, 1000, time.time() + 3, 99))
        deadline = time.time() + seconds
        started = time.time()
        parts = _pool_run(
            _ingest_worker, [(server.url, gateway, accounts, 1000, deadline, i) for i in range(4)]
        )
        elapsed = time.time() - started
    lat = [x for p in parts for x in p["latencies"]]
    records = sum(p["records"] for p in parts)
    rate = records / elapsed
    tps = float(baseline["tps"] or 0)  # float-ok: benchmark statistics, not money
    write_result(
        name,
        {
            "clients": 4,
            "server_workers": WORKERS,
            "batch_size": 1000,
            "accounts": n_accounts,
            "seconds": round(elapsed, 1),
            "records_charged": records,
            "records_rejected": sum(p["rejected"] for p in parts),
            "records_per_s": round(rate),
            "target_records_per_s": target,
            "batch_latency_ms": {
                "p50": round(_pct(lat, 0.5) * 1000, 1),
                "p99": round(_pct(lat, 0.99) * 1000, 1),
                "mean": round(statistics.fmean(lat) * 1000, 1) if lat else None,
            },
            "pgbench_tpcb": baseline,
            "ratio_to_pgbench_tps": round(rate / tps, 2) if tps else None,
        },
    )


def ingest(seconds: int) -> None:
    """1,000-record batches from 4 clients over 10,000 accounts."""
    _ingest("ingest", 10_000, seconds, 20_000)


def hot_wallet(seconds: int) -> None:
    """The same load, every record on one account."""
    _ingest("hot_wallet", 1, seconds, 10_000)


def authorize_settle(seconds: int) -> None:
    """32 clients, each: authorize, then settle with a one-record usage report."""
    with serve(workers=WORKERS) as server:
        baseline = _baseline(server, 4)
        gateway, accounts = setup(server, 1000, "100000.00")
        deadline = time.time() + seconds
        started = time.time()
        parts = _pool_run(
            _auth_worker, [(server.url, gateway, accounts, deadline, i) for i in range(32)]
        )
        elapsed = time.time() - started
    lat = [x for p in parts for x in p["latencies"]]
    holds = sum(p["holds"] for p in parts)
    rate = holds / elapsed
    tps = float(baseline["tps"] or 0)  # float-ok: benchmark statistics, not money
    write_result(
        "authorize_settle",
        {
            "clients": 32,
            "server_workers": WORKERS,
            "seconds": round(elapsed, 1),
            "holds": holds,
            "holds_per_s": round(rate),
            "target_holds_per_s": 1500,
            "target_p99_ms": 50,
            "authorize_plus_settle_latency_ms": {
                "p50": round(_pct(lat, 0.5) * 1000, 1),
                "p99": round(_pct(lat, 0.99) * 1000, 1),
            },
            "pgbench_tpcb": baseline,
            "ratio_to_pgbench_tps": round(rate / tps, 2) if tps else None,
        },
    )


def overdraft(seconds: int) -> None:
    """64 clients race on one account funded for exactly N records: exactly N succeed."""
    n = 500
    with serve(workers=WORKERS) as server:
        baseline = _baseline(server, 4)
        gateway, accounts = setup(server, 1, "0.01")
        # each record costs 1000 * 15 / 1e6 + 1000 * 3 / 1e6 = 0.018; fund exactly n of them
        admin = server.cli("create-key", "--role", "finance")
        api = Api(server.url, admin)
        funds = f"{n * 18 // 1000}.{(n * 18) % 1000:03d}"
        extra = _subtract(funds, "0.01")
        status, body = api.call(
            "POST",
            f"/v1/accounts/{accounts[0]}/topups",
            {"amount": extra, "method": "bank_transfer"},
        )
        if status != 201:
            raise RuntimeError(f"top-up failed: {status} {body}")
        started = time.time()
        parts = _pool_run(
            _overdraft_worker, [(server.url, gateway, accounts[0], 12, i) for i in range(64)]
        )
        elapsed = time.time() - started
        _, balance = Api(server.url, admin).call("GET", f"/v1/accounts/{accounts[0]}/balance")
    ok = sum(p["ok"] for p in parts)
    write_result(
        "overdraft_race",
        {
            "clients": 64,
            "attempts": 64 * 12,
            "funded_for": n,
            "charged": ok,
            "refused": sum(p["refused"] for p in parts),
            "exact": ok == n,
            "final_balance": balance["paid"],
            "final_available": balance["available"],
            "seconds": round(elapsed, 1),
            "attempts_per_s": round(64 * 12 / elapsed),
            "pgbench_tpcb": baseline,
            "ratio_to_pgbench_tps": round(64 * 12 / elapsed / float(baseline["tps"]), 2)
            if baseline["tps"]
            else None,
        },
    )
    if ok != n or balance["paid"] not in ("0.00", "0"):
        raise SystemExit(f"overdraft race failed: {ok} charged for {n} funded; balance {balance}")


def _subtract(a: str, b: str) -> str:
    from decimal import Decimal

    value = Decimal(a) - Decimal(b)
    if value <= 0:
        raise ValueError("funding must exceed the initial top-up")
    return f"{value:.2f}"


BENCHES: dict[str, Callable[[int], None]] = {
    "ingest": ingest,
    "hot-wallet": hot_wallet,
    "authorize-settle": authorize_settle,
    "overdraft": overdraft,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", choices=[*BENCHES, "all"])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--workers", type=int, default=1, help="tokenwallet serve --workers")
    args = parser.parse_args()
    global WORKERS
    WORKERS = args.workers
    for name in BENCHES if args.bench == "all" else [args.bench]:
        BENCHES[name](args.seconds)


if __name__ == "__main__":
    main()
