"""32 concurrent bank top-ups: what the book's cash account costs them.

Every bank top-up posts to its book's ``cash:bank``. With a cached balance that row is locked by
each top-up until it commits, so concurrent top-ups of different customers queue on it (bulk
crediting, imports). ``cash:bank`` now keeps no cached balance (its balance is summed from its
postings, like revenue and promotions), so top-ups of different customers share no row.

The run: ``tokenwallet serve``, pgbench TPC-B on the same PostgreSQL (the baseline), one
account per client, then 32 clients each POST ``/v1/accounts/{id}/topups`` (bank transfer, a
unique reference and ``Idempotency-Key``) on their own account for ``--seconds``: top-ups/s and
p50/p99. The same load is run a second time after turning the cached balance of ``cash:bank``
back on with the migration's own down script (``migrations/sql/cash_untracked.down.sql``), i.e.
the schema before this change, and back off again afterwards. Exactness: every account's paid
balance equals what its client topped up, ``cash:bank``'s postings equal the sum of all top-ups,
and ``tokenwallet db audit`` is clean.

``.venv/bin/python -m bench.bank_topups [--seconds 30] [--clients 32] [--workers 1]``
writes ``bench/results/bank_topups.json``.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.common import (
    Options,
    _balances,
    _common,
    baseline,
    closing_all,
    measured,
    ratio,
    setup,
)
from bench.harness import Server, exit_cleanly_on_sigterm, pg_bin, serve, write_result
from bench.loadgen import Clock, Conn, percentiles_ms

ROOT = Path(__file__).resolve().parent.parent
SQL = ROOT / "migrations" / "sql"
AMOUNT = Decimal("1.00")


def psql(server: Server, sql: str) -> str:
    """Run SQL on the server's database (as the embedded superuser)."""
    out = subprocess.run(
        [
            pg_bin("psql"),
            "-h",
            server.socket_dir,
            "-U",
            "postgres",
            "-d",
            "tokenwallet",
            "-v",
            "ON_ERROR_STOP=1",
            "-qAt",
            "-c",
            sql,
        ],
        check=True,
        capture_output=True,
    )
    return out.stdout.decode().strip()


def cash_bank(server: Server) -> tuple[Decimal, bool]:
    """``cash:bank`` summed from its postings, and whether it keeps a cached balance.

    USD, operator book.
    """
    row = psql(
        server,
        "SELECT coalesce(sum(p.amount), 0)::text || '|' || bool_and(a.track_balance)::text"
        " FROM ledger_accounts a LEFT JOIN ledger_postings p ON p.account_id = a.id"
        " WHERE a.code = 'cash:bank' AND a.book = 'operator' AND a.unit = 'USD'",
    )
    atoms, tracked = row.split("|")
    return Decimal(atoms) / Decimal(10**18), tracked == "true"


async def _load(
    server: Server, key: str, accounts: list[str], seconds: int, run: str
) -> dict[str, Any]:
    conns = await loadgen.connections(server.host, server.port, key, len(accounts))
    lat: list[float] = []
    done: collections.Counter[str] = collections.Counter()
    failures: collections.Counter[str] = collections.Counter()
    clock = Clock(seconds)

    async def client(conn: Conn, account: str) -> None:
        while clock.running():
            ref = f"{run}-{uuid.uuid4().hex}"
            body = {"amount": str(AMOUNT), "method": "bank_transfer", "reference": ref}
            t = time.perf_counter()
            try:
                await conn.call(
                    "POST",
                    f"/v1/accounts/{account}/topups",
                    body,
                    expect=201,
                    headers=f"Idempotency-Key: {ref}\r\n".encode(),
                )
            except loadgen.HttpError as exc:
                failures[str(exc.status)] += 1
                continue
            lat.append(time.perf_counter() - t)
            done[account] += 1

    with closing_all(conns):
        _, elapsed, cpu = await measured(
            server,
            clock,
            lambda _clock: (client(c, a) for c, a in zip(conns, accounts, strict=True)),
        )
    return {"done": done, "failures": failures, "latencies": lat, "elapsed": elapsed, "cpu": cpu}


def _timed(server: Server, key: str, accounts: list[str], seconds: int, run: str) -> dict[str, Any]:
    before = loadgen.run(_balances(server, key, accounts))
    cash_before, tracked = cash_bank(server)
    out = loadgen.run(_load(server, key, accounts, seconds, run))
    after = loadgen.run(_balances(server, key, accounts))
    cash_after, _ = cash_bank(server)
    total = sum(out["done"].values())
    exact = (
        all(
            Decimal(after[a]["paid"]) - Decimal(before[a]["paid"]) == AMOUNT * out["done"][a]
            for a in accounts
        )
        and cash_after - cash_before == AMOUNT * total
    )
    rate = total / out["elapsed"]
    return {
        "cash_bank_cached_balance": tracked,
        "seconds": round(out["elapsed"], 2),
        "topups": total,
        "topups_per_s": round(rate, 1),
        "latency_ms": percentiles_ms(out["latencies"]),
        "failures": dict(out["failures"]),
        "topped_up": str(AMOUNT * total),
        "cash_bank_moved": str(cash_after - cash_before),
        "exact": exact,
        "cpu_seconds": out["cpu"],
    }


def bank_topups(opts: Options, clients: int) -> None:
    """Time the top-ups without, then with, a cached ``cash:bank`` balance; write the result.

    Args:
        opts: the shared options (``seconds`` per timed run, server ``workers``).
        clients: concurrent clients, one account each.
    """
    with serve(workers=opts.workers) as server:
        base = baseline(server)
        keys, accounts = setup(server, clients, "1.00")
        now = _timed(server, keys.finance, accounts, opts.seconds, "untracked")
        # the schema before this change: cash:bank keeps a cached balance, locked by each top-up
        psql(server, (SQL / "cash_untracked.down.sql").read_text())
        before = _timed(server, keys.finance, accounts, opts.seconds, "tracked")
        psql(server, (SQL / "cash_untracked.up.sql").read_text())
        audit = subprocess.run(
            [str(Path(__import__("sys").executable).parent / "tokenwallet"), "db", "audit"],
            env=server.env,
            capture_output=True,
        )
        common = _common(opts, server, base, clients, len(accounts))
    for r in (now, before):
        r["ratio_to_pgbench_tps"] = ratio(r["topups_per_s"], base)
    exact = now["exact"] and before["exact"] and audit.returncode == 0
    write_result(
        "bank_topups",
        {
            **common,
            "amount_per_topup": str(AMOUNT),
            "cash_bank_from_postings": now,
            "cash_bank_cached_row": before,
            "speedup": (
                round(now["topups_per_s"] / before["topups_per_s"], 2)
                if before["topups_per_s"]
                else None
            ),
            "db_audit": (audit.stdout or audit.stderr).decode().strip()[-500:],
            "exact": exact,
        },
    )
    if not exact:
        raise SystemExit("bank_topups: not exact")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the benchmark.

    Args:
        argv: the command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="tokenwallet serve --workers")
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()
    bank_topups(Options(seconds=args.seconds, workers=args.workers), args.clients)


if __name__ == "__main__":
    main()
