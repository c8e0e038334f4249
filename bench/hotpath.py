"""Gateway hot-path benchmarks over HTTP, each with pgbench TPC-B on the same server as baseline.

They drive ``tokenwallet serve`` on embedded PostgreSQL.

Run one (writes ``bench/results/<name>.json``)::

    .venv/bin/python -m bench.hotpath ingest            # 4 clients, 1,000-record batches
    .venv/bin/python -m bench.hotpath ingest-200        # the same over 200 accounts
    .venv/bin/python -m bench.hotpath hot-wallet        # the same, all on one account
    .venv/bin/python -m bench.hotpath authorize-settle  # 32 clients: authorize + settle
    .venv/bin/python -m bench.hotpath overdraft         # 64 clients race one account
    .venv/bin/python -m bench.hotpath multicapture      # 32 gateways spending grants locally
    .venv/bin/python -m bench.hotpath all

``--seconds`` shortens the timed runs (default 60); ``--workers`` runs ``tokenwallet serve
--workers N``; ``--accounts`` overrides the account count of ``ingest`` (smoke runs).

The simulated clients of every benchmark but ``multicapture`` run in one asyncio process
(:mod:`bench.loadgen`): one keep-alive connection per client, one request at a time on it.
Each result reports the CPU seconds of that process next to those of the server and of
PostgreSQL over the timed window, so the cost of the load generator is visible.
"""

from __future__ import annotations

import argparse
import collections
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bench import loadgen
from bench.common import (
    MODEL,
    Options,
    _balances,
    _common,
    _now,
    _record,
    baseline,
    check_balances,
    closing_all,
    measured,
    price_of,
    ratio,
    setup,
)
from bench.harness import (
    Server,
    exit_cleanly_on_sigterm,
    serve,
    write_result,
)
from bench.loadgen import Clock, Conn, HttpError, encode, percentiles_ms


async def _ingest_load(
    server: Server, key: str, accounts: list[str], clients: int, seconds: int, batch: int
) -> dict[str, Any]:
    conns = await loadgen.connections(server.host, server.port, key, clients)
    n_acc = len(accounts)
    stats: dict[str, Any] = {"latencies": [], "charged": 0, "reasons": collections.Counter()}

    async def client(conn: Conn, c: int, clock: Clock, record: bool) -> int:
        prefix = f"{c}-{uuid.uuid4().hex[:8]}"
        n = 0
        while clock.running():
            at = _now()
            body = encode(
                {
                    "records": [
                        _record(f"{prefix}-{n}-{i}", accounts[(n * batch + i * 7 + c) % n_acc], at)
                        for i in range(batch)
                    ]
                }
            )
            t = time.perf_counter()
            out = await conn.call("POST", "/v1/usage", body, expect=200)
            if record:
                stats["latencies"].append(time.perf_counter() - t)
                for r in out["results"]:
                    if r["status"] == "charged":
                        stats["charged"] += 1
                    else:
                        stats["reasons"][f"{r['status']}:{r.get('reason')}"] += 1
            n += 1
        return n

    with closing_all(conns):
        # warm-up (imports, price caches, connection pool), one client, not measured
        await client(conns[0], 99, Clock(min(3, seconds)), record=False)
        batches, elapsed, cpu = await measured(
            server,
            seconds,
            lambda clock: (client(conn, c, clock, True) for c, conn in enumerate(conns)),
        )
    return {**stats, "elapsed": elapsed, "cpu": cpu, "batches": sum(batches)}


def _ingest(opts: Options, name: str, n_accounts: int, target: int) -> None:
    clients, batch = 4, 1000
    with serve(workers=opts.workers) as server:
        base = baseline(server)
        t = time.perf_counter()
        keys, accounts = setup(server, n_accounts, "100000.00")
        setup_s = time.perf_counter() - t
        run = loadgen.run(
            _ingest_load(server, keys.gateway, accounts, clients, opts.seconds, batch)
        )
        common = _common(opts, server, base, clients, n_accounts)
    rate = run["charged"] / run["elapsed"]
    write_result(
        name,
        {
            **common,
            "batch_size": batch,
            "seconds": round(run["elapsed"], 2),
            "setup_seconds": round(setup_s, 1),
            "batches": run["batches"],
            "records_charged": run["charged"],
            "records_not_charged": dict(run["reasons"]),
            "records_per_s": round(rate),
            "target_records_per_s": target,
            "batch_latency_ms": percentiles_ms(run["latencies"]),
            "cpu_seconds": run["cpu"],
            "ratio_to_pgbench_tps": ratio(rate, base),
        },
    )
    if run["reasons"]:
        raise SystemExit(f"{name}: records not charged: {dict(run['reasons'])}")


def ingest(opts: Options) -> None:
    """1,000-record batches from 4 clients over 10,000 accounts."""
    _ingest(opts, "ingest", opts.accounts or 10_000, 20_000)


def ingest_200(opts: Options) -> None:
    """The same load over 200 accounts."""
    _ingest(opts, "ingest_200", 200, 20_000)


def hot_wallet(opts: Options) -> None:
    """The same load, every record on one account."""
    _ingest(opts, "hot_wallet", 1, 10_000)


# -- authorize + settle -----------------------------------------------------------------------


@dataclass
class _AuthRun:
    """What the authorize + settle clients saw: latencies, money billed per account, failures."""

    price: Decimal
    billed: dict[str, Decimal] = field(default_factory=lambda: collections.defaultdict(Decimal))
    latencies: list[float] = field(default_factory=list)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: list[str] = field(default_factory=list)
    off_price: int = 0
    pairs: int = 0

    def fail(self, kind: str, detail: str) -> None:
        self.failures[kind] += 1
        if len(self.examples) < 5:
            self.examples.append(detail[:500])

    async def pair(self, conn: Conn, account: str, rid: str) -> None:
        """One authorize, then one usage record that captures the hold."""
        t = time.perf_counter()
        body = {"account_id": account, **_HOLD_BODY}
        try:
            hold = await conn.call("POST", "/v1/authorizations", body, expect=201)
        except HttpError as exc:
            return self.fail("authorize_error", str(exc))
        if hold.get("status") != "approved":
            return self.fail(f"authorize_{hold.get('status')}", str(hold))
        rec = _record(rid, account, _now(), output_tokens=400, auth=hold["id"])
        try:
            out = await conn.call("POST", "/v1/usage", {"records": [rec]}, expect=200)
        except HttpError as exc:
            return self.fail("settle_error", str(exc))
        self.latencies.append(time.perf_counter() - t)
        result = out["results"][0]
        if result["status"] != "charged":
            return self.fail(f"settle_{result['status']}:{result.get('reason')}", str(result))
        amount = Decimal(result["billed"]["amount"])
        self.billed[account] += amount
        self.pairs += 1
        if amount != self.price:
            self.off_price += 1
        return None


_HOLD_BODY = {"model": MODEL, "estimated_input_tokens": 1000, "max_output_tokens": 1000}


async def _auth_load(
    server: Server, key: str, accounts: list[str], clients: int, seconds: int
) -> dict[str, Any]:
    conns = await loadgen.connections(server.host, server.port, key, clients)
    run = _AuthRun(price_of(1000, 400))

    async def client(conn: Conn, c: int, clock: Clock) -> None:
        n = 0
        while clock.running():
            account = accounts[(c * 7919 + n) % len(accounts)]
            n += 1
            await run.pair(conn, account, f"a{c}-{n}-{uuid.uuid4().hex[:8]}")

    with closing_all(conns):
        _, elapsed, cpu = await measured(
            server, seconds, lambda clock: (client(conn, c, clock) for c, conn in enumerate(conns))
        )
    return {
        "latencies": run.latencies,
        "billed": run.billed,
        "failures": run.failures,
        "examples": run.examples,
        "elapsed": elapsed,
        "cpu": cpu,
        "off_price": run.off_price,
        "pairs": run.pairs,
    }


def authorize_settle(opts: Options) -> None:
    """32 clients, each: authorize, then settle with a one-record usage report naming it."""
    clients, n_accounts, funds = 32, 1000, "100000.00"
    with serve(workers=opts.workers) as server:
        base = baseline(server)
        keys, accounts = setup(server, n_accounts, funds)
        run = loadgen.run(_auth_load(server, keys.gateway, accounts, clients, opts.seconds))
        balances = loadgen.run(_balances(server, keys.admin, accounts))
        common = _common(opts, server, base, clients, n_accounts)
    billed: dict[str, Decimal] = run["billed"]
    check = check_balances(balances, {a: Decimal(funds) - billed[a] for a in accounts})
    pairs = run["pairs"]
    charged = sum(billed.values(), Decimal(0))
    exact = check["mismatches"] == 0 and not run["failures"]
    rate = pairs / run["elapsed"]
    write_result(
        "authorize_settle",
        {
            **common,
            "seconds": round(run["elapsed"], 2),
            "pairs_charged": pairs,
            "holds_per_s": round(rate, 1),
            "target_holds_per_s": 1500,
            "target_p99_ms": 50,
            "authorize_plus_settle_latency_ms": percentiles_ms(run["latencies"]),
            "failures": dict(run["failures"]),
            "failure_examples": run["examples"],
            "billed_total": str(charged),
            "billed_not_at_rate_card_price": run["off_price"],
            "exactness": check,
            "exact": exact,
            "cpu_seconds": run["cpu"],
            "ratio_to_pgbench_tps": ratio(rate, base),
        },
    )
    if not exact:
        raise SystemExit(f"authorize-settle: not exact: {check} failures {dict(run['failures'])}")


# -- overdraft race ---------------------------------------------------------------------------


async def _overdraft_load(
    server: Server, key: str, account: str, clients: int, attempts: int
) -> dict[str, Any]:
    conns = await loadgen.connections(server.host, server.port, key, clients)
    counts: collections.Counter[str] = collections.Counter()
    billed = Decimal(0)
    lat: list[float] = []

    async def client(conn: Conn, c: int) -> None:
        nonlocal billed
        for n in range(attempts):
            rec = _record(f"o{c}-{n}-{uuid.uuid4().hex[:6]}", account, _now(), output_tokens=1000)
            t = time.perf_counter()
            out = await conn.call("POST", "/v1/usage", {"records": [rec]}, expect=200)
            lat.append(time.perf_counter() - t)
            r = out["results"][0]
            if r["status"] == "charged":
                counts["charged"] += 1
                billed += Decimal(r["billed"]["amount"])
            else:
                counts[f"{r['status']}:{r.get('reason')}"] += 1

    with closing_all(conns):
        _, elapsed, cpu = await measured(
            server, 0, lambda _clock: (client(conn, c) for c, conn in enumerate(conns))
        )
    return {"counts": counts, "billed": billed, "latencies": lat, "elapsed": elapsed, "cpu": cpu}


def overdraft(opts: Options) -> None:
    """64 clients race on one account funded for exactly N records: exactly N succeed."""
    n, clients, attempts = 500, 64, 12
    price = price_of(1000, 1000)  # 0.018
    funds = n * price
    with serve(workers=opts.workers) as server:
        base = baseline(server)
        keys, accounts = setup(server, 1, "0.01")
        account = accounts[0]

        async def fund() -> None:  # the rest in a second top-up: two lots to burn down
            api = await Conn(server.host, server.port, keys.finance).open()
            try:
                await api.call(
                    "POST",
                    f"/v1/accounts/{account}/topups",
                    {"amount": f"{funds - Decimal('0.01'):.2f}", "method": "bank_transfer"},
                    expect=201,
                )
            finally:
                api.close()

        loadgen.run(fund())
        run = loadgen.run(_overdraft_load(server, keys.gateway, account, clients, attempts))
        balance = loadgen.run(_balances(server, keys.admin, [account]))[account]
        common = _common(opts, server, base, clients, 1)
    ok = run["counts"]["charged"]
    refused = clients * attempts - ok
    exact = (
        ok == n
        and run["billed"] == funds
        and Decimal(balance["paid"]) == 0
        and Decimal(balance["available"]) == 0
        and Decimal(balance["held"]) == 0
    )
    rate = clients * attempts / run["elapsed"]
    write_result(
        "overdraft_race",
        {
            **common,
            "attempts": clients * attempts,
            "funded": str(funds),
            "funded_for": n,
            "charged": ok,
            "refused": refused,
            "outcomes": dict(run["counts"]),
            "billed_total": str(run["billed"]),
            "final_balance": balance["paid"],
            "final_available": balance["available"],
            "final_held": balance["held"],
            "exact": exact,
            "seconds": round(run["elapsed"], 2),
            "attempts_per_s": round(rate, 1),
            "request_latency_ms": percentiles_ms(run["latencies"]),
            "cpu_seconds": run["cpu"],
            "ratio_to_pgbench_tps": ratio(rate, base),
        },
    )
    if not exact:
        raise SystemExit(f"overdraft race failed: {ok} charged for {n} funded; balance {balance}")


def multicapture(opts: Options) -> None:
    """32 gateways spend multi-capture grants locally (see :mod:`bench.multicapture`)."""
    from bench import multicapture as mc

    mc.run(opts)


BENCHES: dict[str, Callable[[Options], None]] = {
    "ingest": ingest,
    "ingest-200": ingest_200,
    "hot-wallet": hot_wallet,
    "authorize-settle": authorize_settle,
    "overdraft": overdraft,
    "multicapture": multicapture,
}


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark named on the command line, or all of them (``all``).

    Args:
        argv: the command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", choices=[*BENCHES, "all"])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--workers", type=int, default=1, help="tokenwallet serve --workers")
    parser.add_argument(
        "--accounts", type=int, default=None, help="accounts of `ingest` (default 10,000)"
    )
    args = parser.parse_args(argv)
    opts = Options(seconds=args.seconds, workers=args.workers, accounts=args.accounts)
    exit_cleanly_on_sigterm()
    if args.bench != "all":
        BENCHES[args.bench](opts)
        return
    failed: list[str] = []
    for name, bench in BENCHES.items():  # one failing benchmark does not stop the others
        try:
            bench(opts)
        except SystemExit as exc:
            if exc.code == 128 + signal.SIGTERM:
                raise
            print(f"{name}: {exc}", file=sys.stderr)
            failed.append(name)
        except Exception:
            traceback.print_exc()
            failed.append(name)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
