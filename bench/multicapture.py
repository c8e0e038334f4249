"""Multi-capture grants spent locally by gateways using the repository's own client.

Two runs, each against ``tokenwallet serve`` on embedded PostgreSQL with pgbench TPC-B as the
baseline:

``multicapture``
    32 gateway processes (one :class:`integrations.TokenwalletClient` each)
    over 1,000 funded accounts. Each gateway opens a grant per account it serves, then makes
    "calls" as fast as the grants allow: ``cost`` of the estimate, ``try_spend``, and a
    ``settle`` with the actual tokens (fewer than estimated). The client batches the usage
    records in the background, increments grants below their low water and renews them. The
    figure is records charged per second; afterwards every grant is voided and each account's
    paid balance must equal its funding less what its results billed, with nothing held.

``multicapture-hard-stop``
    8 gateway processes share one account funded for exactly 2,000 calls and spend until their
    grants say no. Exactly 2,000 must be charged; the balance ends at 0.00 with nothing held.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import random
import threading
import time
from decimal import Decimal
from typing import Any

from bench.common import (
    MODEL,
    Options,
    _balances,
    baseline,
    check_balances,
    price_of,
    ratio,
    setup,
)
from bench.harness import CpuMeter, Server, serve, write_result
from bench.loadgen import percentiles_ms
from bench.loadgen import run as run_async

#: Unacknowledged records a gateway lets pile up before it pauses (the server sets the pace).
MAX_PENDING = 1_000
ESTIMATE = {"input_tokens": 1000, "output_tokens": 1000}


class _Tally:
    """Results the client reported from its sender thread.

    Money billed per account and outcomes by status.
    """

    def __init__(self) -> None:
        self.billed: dict[str, Decimal] = collections.defaultdict(Decimal)
        self.outcomes: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def on_result(self, record: dict[str, Any], result: Any) -> None:
        with self._lock:
            status = result.status if result.status != "rejected" else f"rej:{result.reason}"
            self.outcomes[status] += 1
            if result.billed is not None and result.status in ("charged", "duplicate"):
                self.billed[record["account_id"]] += result.billed.amount


def _spend(
    client: Any, grants: list[Any], spec: dict[str, Any], stop_at: float, seed: int
) -> tuple[int, int, list[float]]:
    """Serve calls from the grants locally until ``stop_at``.

    In a hard-stop run, also until every grant refuses. Returns the calls made, the calls
    refused, and how long each local spend took.
    """
    rng = random.Random(seed)
    calls = refused = 0
    spend_s: list[float] = []
    live = list(grants)
    i = 0
    while live and time.monotonic() < stop_at:
        g = live[i % len(live)]
        i += 1
        if client.stats().pending > MAX_PENDING:
            time.sleep(0.005)
            continue
        est = g.cost(ESTIMATE)
        t = time.perf_counter()
        ok = g.try_spend(est)
        spend_s.append(time.perf_counter() - t)
        if not ok:
            refused += 1
            if spec["hard_stop"]:
                live.remove(g)
            continue
        output = 1000 if spec["hard_stop"] else rng.randint(100, 1000)
        g.settle({"input_tokens": 1000, "output_tokens": output}, est)
        calls += 1
    return calls, refused, spend_s


def _gateway(
    url: str,
    key: str,
    accounts: list[str],
    spec: dict[str, Any],
    start: Any,
    stop_at: list[float],
    out: dict[str, Any],
) -> None:
    """One gateway: a client, a grant per account, calls until the clock or the grants stop."""
    from integrations import TokenwalletClient

    tally = _Tally()
    client = TokenwalletClient(url, key, on_result=tally.on_result)
    grants = [
        client.grant(
            a, amount=spec["ask"], model=MODEL, increment=spec["ask"], renew=not spec["hard_stop"]
        )
        for a in accounts
    ]
    start.wait()
    calls, refused, spend_s = _spend(client, grants, spec, stop_at[0], hash(tuple(accounts)))
    out["spend_window_end"] = time.monotonic()
    client.flush(120)
    out["flushed_at"] = time.monotonic()
    for g in grants:
        g.void()
    client.close(60)
    stats = client.stats()
    out.update(
        calls=calls,
        refused=refused,
        billed={a: str(v) for a, v in tally.billed.items()},
        outcomes=dict(tally.outcomes),
        try_spend_s=spend_s[:: max(1, len(spend_s) // 2000)],
        retries=stats.retries,
        requests=stats.requests,
    )


def _process(
    url: str,
    key: str,
    shares: list[list[str]],
    spec: dict[str, Any],
    ready: Any,
    start: Any,
    results: Any,
) -> None:
    """A gateway process (a thread per gateway it runs); reports its CPU seconds of the window."""
    stop_at = [float("inf")]
    outs: list[dict[str, Any]] = [{} for _ in shares]
    go = threading.Event()
    threads = [
        threading.Thread(target=_gateway, args=(url, key, share, spec, go, stop_at, outs[n]))
        for n, share in enumerate(shares)
    ]
    for t in threads:
        t.start()
    ready.put(1)
    start.wait()
    cpu0 = time.process_time()
    stop_at[0] = time.monotonic() + spec["seconds"]
    go.set()
    for t in threads:
        t.join()
    results.put({"gateways": outs, "cpu_s": time.process_time() - cpu0})


def _drive(server: Server, key: str, accounts: list[str], spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``spec["gateways"]`` gateways, a process each; collect their results."""
    ctx = mp.get_context("spawn")
    gateways = spec["gateways"]
    per_gateway = [accounts[g::gateways] or accounts for g in range(gateways)]
    per_process = [[share] for share in per_gateway]
    ready, results, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=_process, args=(server.url, key, share, spec, ready, start, results))
        for share in per_process
        if share
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=600)  # every grant is open
    meter = CpuMeter(server)
    meter.start(client=0.0)
    t0 = time.monotonic()
    start.set()
    parts = [results.get(timeout=spec["seconds"] + 900) for _ in procs]
    for p in procs:
        p.join()
    gws = [g for part in parts for g in part["gateways"]]
    # the rate counts a call once its record is charged: up to the last flush, not the last spend
    window = max(g["flushed_at"] for g in gws) - t0
    spend_window = max(g["spend_window_end"] for g in gws) - t0
    cpu = meter.stop(client=sum(part["cpu_s"] for part in parts))
    billed: dict[str, Decimal] = collections.defaultdict(Decimal)
    outcomes: collections.Counter[str] = collections.Counter()
    for g in gws:
        for a, v in g["billed"].items():
            billed[a] += Decimal(v)
        outcomes.update(g["outcomes"])
    return {
        "calls": sum(g["calls"] for g in gws),
        "refused": sum(g["refused"] for g in gws),
        "billed": billed,
        "outcomes": dict(outcomes),
        "window": window,
        "spend_window": spend_window,
        "cpu": cpu,
        "try_spend": percentiles_ms([s for g in gws for s in g["try_spend_s"]]),
        "requests": sum(g["requests"] for g in gws),
        "retries": sum(g["retries"] for g in gws),
    }


def _check(
    server: Server, key: str, accounts: list[str], funds: Decimal, billed: dict[str, Decimal]
) -> dict[str, Any]:
    balances = run_async(_balances(server, key, accounts))
    return check_balances(balances, {a: funds - billed[a] for a in balances})


def throughput(opts: Options) -> None:
    """32 gateways over 1,000 accounts: records charged per second, balances exact."""
    gateways, n_accounts, funds = 32, 1000, Decimal("100000.00")
    spec = {"gateways": gateways, "ask": "2.00", "hard_stop": False, "seconds": opts.seconds}
    with serve(workers=opts.workers) as server:
        base = baseline(server)
        keys, accounts = setup(server, n_accounts, str(funds))
        run = _drive(server, keys.gateway, accounts, spec)
        check = _check(server, keys.admin, accounts, funds, run["billed"])
        log = server.log_problems()
    charged = run["outcomes"].get("charged", 0) + run["outcomes"].get("duplicate", 0)
    exact = check["mismatches"] == 0 and charged == run["calls"]
    rate = run["calls"] / run["window"]
    write_result(
        "multicapture",
        {
            "server_workers": opts.workers,
            "gateways": gateways,
            "gateway_processes": gateways,
            "accounts": n_accounts,
            "grant_ask": spec["ask"],
            "seconds_spending": round(run["spend_window"], 2),
            "seconds_until_all_charged": round(run["window"], 2),
            "calls_settled": run["calls"],
            "calls_charged_per_s": round(rate),
            "refused_locally": run["refused"],
            "results": run["outcomes"],
            "usage_requests": run["requests"],
            "retries": run["retries"],
            "try_spend_latency_ms": run["try_spend"],
            "billed_total": str(sum(run["billed"].values(), Decimal(0))),
            "exactness": check,
            "exact": exact,
            "cpu_seconds": run["cpu"],
            "pgbench_tpcb": base,
            "ratio_to_pgbench_tps": ratio(rate, base),
            "server_log": log,
        },
    )
    if not exact:
        raise SystemExit(f"multicapture: not exact: {check} results {run['outcomes']}")


def hard_stop(opts: Options) -> None:
    """8 gateways share one account funded for exactly 2,000 calls: exactly 2,000 charged."""
    gateways, n = 8, 2000
    price = price_of(1000, 1000)
    funds = price * n
    spec = {"gateways": gateways, "ask": str(price * 25), "hard_stop": True, "seconds": 600}
    with serve(workers=opts.workers) as server:
        base = baseline(server)
        keys, accounts = setup(server, 1, str(funds))
        run = _drive(server, keys.gateway, accounts, spec)
        check = _check(server, keys.admin, accounts, funds, run["billed"])
        balance = run_async(_balances(server, keys.admin, accounts))[accounts[0]]
        log = server.log_problems()
    billed = sum(run["billed"].values(), Decimal(0))
    exact = (
        run["calls"] == n
        and billed == funds
        and check["mismatches"] == 0
        and Decimal(balance["paid"]) == 0
        and Decimal(balance["held"]) == 0
    )
    write_result(
        "multicapture_hard_stop",
        {
            "server_workers": opts.workers,
            "gateways": gateways,
            "funded": str(funds),
            "funded_for_calls": n,
            "grant_ask": spec["ask"],
            "calls_settled": run["calls"],
            "refused_locally": run["refused"],
            "results": run["outcomes"],
            "billed_total": str(billed),
            "final_balance": balance,
            "seconds": round(run["window"], 2),
            "exact": exact,
            "cpu_seconds": run["cpu"],
            "pgbench_tpcb": base,
            "server_log": log,
        },
    )
    if not exact:
        raise SystemExit(f"multicapture hard stop: {run['calls']} calls for {n}; {balance}")


def run(opts: Options) -> None:
    """Both runs."""
    throughput(opts)
    hard_stop(opts)
