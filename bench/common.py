"""What every benchmark shares.

Options, the catalog, accounts and keys, record bodies, the pgbench baseline and final balances.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from bench import loadgen
from bench.harness import (
    CpuMeter,
    Server,
    pgbench_tpcb,
)
from bench.loadgen import Clock, Conn

T = TypeVar("T")

MODEL = "bench-model"
PRICE_IN, PRICE_OUT = "3", "15"
MTOK = Decimal(1_000_000)
#: Accounts made per transaction by :func:`bulk_accounts`.
SETUP_CHUNK = 500


@dataclass
class Options:
    """Command-line options shared by every benchmark."""

    seconds: int = 60
    #: HTTP worker processes of the server under test (``tokenwallet serve --workers``).
    workers: int = 1
    #: Overrides the account count of the ``ingest`` benchmark (smoke runs).
    accounts: int | None = None


def price_of(input_tokens: int, output_tokens: int) -> Decimal:
    """What a record costs with the bench rate card, computed here independently."""
    return (input_tokens * Decimal(PRICE_IN) + output_tokens * Decimal(PRICE_OUT)) / MTOK


@dataclass
class Keys:
    """The API keys a benchmark run uses."""

    admin: str
    gateway: str
    finance: str


# -- setup (not measured) ---------------------------------------------------------------------


def setup(server: Server, accounts: int, funds: str) -> tuple[Keys, list[str]]:
    """API keys, the bench model with its rate card, and ``accounts`` funded accounts.

    Each account gets ``funds`` through the service layer, on the same database.
    """
    admin = server.cli("create-key", "--role", "admin")

    async def catalog() -> tuple[str, str]:
        api = await Conn(server.host, server.port, admin).open()
        try:
            await api.call(
                "POST", "/v1/models", {"id": MODEL, "provider": "bench", "display_name": "Bench"}
            )
            effective = (datetime.now(UTC) - timedelta(days=1)).isoformat()
            price = {"model": MODEL, "input_per_mtok": PRICE_IN, "output_per_mtok": PRICE_OUT}
            await api.call(
                "POST",
                "/v1/rate-cards",
                {"currency": "USD", "effective_from": effective, "prices": [price]},
            )
            gateway = await api.call("POST", "/v1/api-keys", {"role": "gateway"})
            finance = await api.call("POST", "/v1/api-keys", {"role": "finance"})
            return gateway["key"], finance["key"]
        finally:
            api.close()

    gateway, finance = loadgen.run(catalog())
    ids = bulk_accounts(server, accounts, funds)
    return Keys(admin, gateway, finance), ids


def _make_accounts(args: tuple[str, int, str]) -> list[str]:
    """Create and fund ``count`` accounts through the service layer (in a setup process)."""
    url, count, funds = args
    os.environ["DATABASE_URL"] = url
    from sqlalchemy.orm import Session

    from api.db import make_engine
    from wallet.accounts import create_account
    from wallet.topups import record_topup

    engine = make_engine(url, pool_size=1)
    ids: list[str] = []
    try:
        for start in range(0, count, SETUP_CHUNK):
            with Session(engine) as s:
                for _ in range(start, min(count, start + SETUP_CHUNK)):
                    a = create_account(s, name="bench", currency="USD")
                    record_topup(s, a.id, amount=funds, method="bank_transfer")
                    ids.append(a.id)
                s.commit()
    finally:
        engine.dispose()
    return ids


def bulk_accounts(server: Server, n: int, funds: str) -> list[str]:
    """Create and fund ``n`` accounts (setup, not measured).

    Each account is made by the service layer (``create_account`` + ``record_topup``), in
    transactions of :data:`SETUP_CHUNK`. Top-ups lock only the customer's own ledger rows (house
    accounts are never locked), so several processes make them side by side: one per core
    keeps both the Python side and PostgreSQL busy.
    """
    procs = 1 if n < 200 else min(4, max(2, os.cpu_count() or 2))
    shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    jobs = [(server.database_url, k, funds) for k in shares if k]
    if len(jobs) == 1:
        return _make_accounts(jobs[0])
    with mp.get_context("spawn").Pool(len(jobs)) as pool:
        parts = pool.map(_make_accounts, jobs)
    # interleave the shares, so neighbouring indexes come from different setup processes
    ids: list[str] = []
    for i in range(max(len(p) for p in parts)):
        ids.extend(p[i] for p in parts if i < len(p))
    return ids


def _record(
    rid: str,
    account: str,
    at: str,
    *,
    input_tokens: int = 1000,
    output_tokens: int = 500,
    auth: str | None = None,
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": rid,
        "account_id": account,
        "model": MODEL,
        "occurred_at": at,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
    }
    if auth:
        rec["authorization_id"] = auth
    return rec


def _now() -> str:
    return datetime.now(UTC).isoformat()


def baseline(server: Server) -> dict[str, Any]:
    """Pgbench TPC-B, 4 clients, scale 10, 15 s, before the timed load."""
    return pgbench_tpcb(server.socket_dir, clients=4, seconds=15, scale=10)


def ratio(rate: float, base: dict[str, Any]) -> float | None:
    """``rate`` over pgbench's TPC-B transactions per second in the same run."""
    tps = float(base["tps"] or 0)  # float-ok: benchmark statistics, not money
    return round(rate / tps, 3) if tps else None


def _common(
    opts: Options, server: Server, base: dict[str, Any], clients: int, accounts: int
) -> dict[str, Any]:
    return {
        "server_workers": opts.workers,
        "clients": clients,
        "accounts": accounts,
        "load_generator": {"processes": 1, "event_loop": loadgen.LOOP, "http": "HTTP/1.1"},
        "pgbench_tpcb": base,
        "server_log": server.log_problems(),
    }


async def _balances(server: Server, key: str, accounts: list[str]) -> dict[str, dict[str, Any]]:
    """``GET /v1/accounts/{id}/balance`` of every account (16 connections)."""
    conns = await loadgen.connections(server.host, server.port, key, min(16, len(accounts)))
    out: dict[str, dict[str, Any]] = {}

    async def one(conn: Conn, account: str) -> None:
        out[account] = await conn.call("GET", f"/v1/accounts/{account}/balance", expect=200)

    with closing_all(conns):
        await loadgen.for_each(conns, accounts, one)
    return out


@contextmanager
def closing_all(conns: list[Conn]) -> Iterator[list[Conn]]:
    """Close every connection on the way out, whatever happened."""
    try:
        yield conns
    finally:
        for conn in conns:
            conn.close()


async def measured(
    server: Server, clock: Clock | float, clients: Callable[[Clock], Iterable[Awaitable[T]]]
) -> tuple[list[T], float, dict[str, Any]]:
    """Run the clients in the timed window under a CPU meter.

    Args:
        server: the server under test (its CPU and PostgreSQL's are measured).
        clock: a clock already running, or the seconds of one started with the meter.
        clients: makes the clients' coroutines, given the clock they run by.

    Returns:
        What each client returned, the seconds elapsed on the clock, and the CPU seconds.
    """
    meter = CpuMeter(server)
    meter.start()
    if not isinstance(clock, Clock):
        clock = Clock(clock)
    results = await asyncio.gather(*clients(clock))
    elapsed = clock.elapsed()
    cpu = meter.stop()
    return list(results), elapsed, cpu


def check_balances(
    balances: dict[str, dict[str, Any]], expected_paid: dict[str, Decimal]
) -> dict[str, Any]:
    """Paid balance equal to what is expected and nothing held, for every account."""
    wrong: list[dict[str, str]] = []
    for account, want in expected_paid.items():
        b = balances[account]
        if Decimal(b["paid"]) != want or Decimal(b["held"]) != 0:
            wrong.append(
                {"account": account, "paid": b["paid"], "expected": str(want), "held": b["held"]}
            )
    return {"accounts_checked": len(expected_paid), "mismatches": len(wrong), "first": wrong[:5]}
