"""``tokenwallet serve`` on its embedded PostgreSQL (no DATABASE_URL).

The database is started again when it dies, requests meanwhile answer 503 ``database_unavailable``
with Retry-After, and it is stopped when serve stops (SIGTERM, one worker or several).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.served import TOKENWALLET, free_port


def postmaster_pid(data_dir: Path) -> int | None:
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def wait_for(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def health(port: int) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code
    except httpx.HTTPError:
        return None


def start(data_dir: Path, log: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["TOKENWALLET_DATA_DIR"] = str(data_dir)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(TOKENWALLET), "serve", "--port", str(port), "--no-scheduler", *extra],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: health(port) == 200, 120, "the server to answer /health")
    except AssertionError:
        proc.kill()
        raise AssertionError(log.read_text()[-3000:]) from None
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_killed_embedded_postgres_is_started_again(tmp_path):
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    proc, port = start(data_dir, log)
    try:
        first = postmaster_pid(data_dir)
        assert first is not None
        key = subprocess.run(
            [str(TOKENWALLET), "create-key", "--role", "admin"],
            env={
                **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
                "TOKENWALLET_DATA_DIR": str(data_dir),
            },
            check=True,
            capture_output=True,
        ).stdout.decode()
        headers = {"Authorization": f"Bearer {key.strip()}"}
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: postmaster_pid(data_dir) not in (None, first), 60, "a new postmaster")

        # requests work again (the pool drops connections to the dead server)
        def created() -> bool:
            r = httpx.post(
                f"http://127.0.0.1:{port}/v1/accounts",
                json={"name": "after restart", "currency": "USD"},
                headers=headers,
                timeout=5,
            )
            assert r.status_code in (201, 503), r.text
            if r.status_code == 503:
                assert r.json()["code"] == "database_unavailable"
                assert r.headers["retry-after"]
            return r.status_code == 201

        wait_for(created, 30, "an account to be created after the restart")
        assert "starting it again" in log.read_text()
    finally:
        stop(proc)
    assert postmaster_pid(data_dir) is None


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_stops_the_embedded_postgres(tmp_path, workers):
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    proc, _ = start(data_dir, log, "--workers", workers)
    assert postmaster_pid(data_dir) is not None
    code = stop(proc)
    assert code in (0, 128 + signal.SIGTERM), log.read_text()[-2000:]
    assert postmaster_pid(data_dir) is None, log.read_text()[-2000:]
