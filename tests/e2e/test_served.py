"""The served process under concurrency.

Requests beyond its worker threads and pooled connections queue, they never deadlock.
"""

from __future__ import annotations

import threading

import httpx
from sqlalchemy.orm import Session

from api.auth import create_key
from tests.e2e.served import Server
from wallet.accounts import create_account


def test_many_concurrent_reads_never_starve_the_pool(database_url, engine, tmp_path):
    """Litestar cleans up a sync generator dependency in a worker thread.

    With every worker thread waiting for a pooled connection that only such a cleanup returns, 32
    concurrent balance reads used to hang until the pool timed out (30 s).
    """
    with Session(engine) as s:
        key = create_key(s, role="admin").secret
        account_id = create_account(s, name="C", currency="USD").id
        s.commit()
    server = Server(database_url, tmp_path / "server.log")
    server.env["TOKENWALLET_DB_POOL_SIZE"] = "2"  # 4 connections: starved at once if it can be
    server.start()
    try:
        codes: list[int] = []
        lock = threading.Lock()

        def read() -> None:
            with httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=20
            ) as c:
                for _ in range(5):
                    code = c.get(f"/v1/accounts/{account_id}/balance").status_code
                    with lock:
                        codes.append(code)

        threads = [threading.Thread(target=read) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == [200] * 160
    finally:
        server.stop()


def test_workers_share_the_port_and_stop_on_sigterm(database_url, tmp_path):
    import os
    import signal
    import subprocess
    import time

    from tests.e2e.served import TOKENWALLET, free_port

    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [
            str(TOKENWALLET),
            "serve",
            "--port",
            str(port),
            "--no-scheduler",
            "--no-migrate",
            "--workers",
            "2",
        ],
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        # separate connections land on both workers; every one is answered
        codes = {
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code for _ in range(20)
        }
        assert codes == {200}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
