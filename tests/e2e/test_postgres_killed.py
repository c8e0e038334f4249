"""The fault suite.

PostgreSQL itself is killed with SIGKILL under load (usage batches from a gateway client and top-ups
with Idempotency-Keys, both retrying what failed), the server's supervisor starts it again, and
afterwards every account is right to the atom, every record has exactly one result and ``tokenwallet
db audit`` passes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx

from integrations import ClientStats, TokenwalletClient
from tests.e2e.served import TOKENWALLET
from tests.e2e.test_embedded_supervision import postmaster_pid, start, stop, wait_for
from tests.helpers import add_model_m

CALL = {"input_tokens": 1000, "output_tokens": 1000}  # USD 0.018 at 3 in / 15 out per Mtok
CALL_COST = Decimal("0.018")
ACCOUNTS = 8
RECORDS = 2400
TOPUPS_PER_ACCOUNT = 5


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["TOKENWALLET_DATA_DIR"] = str(data_dir)
    return subprocess.run([str(TOKENWALLET), *args], env=env, capture_output=True, timeout=120)


def post_until_answered(c: httpx.Client, path: str, body: dict, key: str) -> httpx.Response:
    """POST with an Idempotency-Key, sent again (same key) after a 503 or a lost connection."""
    deadline = time.monotonic() + 90
    while True:
        try:
            resp = c.post(path, json=body, headers={"Idempotency-Key": key})
            if resp.status_code != 503:
                return resp
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{path} never answered"
        time.sleep(0.2)


def set_up(url: str, data_dir: Path) -> tuple[str, str, list[str]]:
    """Keys, the model, its card and the accounts of 100.00 each: (admin, gateway, accounts)."""
    admin_key = cli(data_dir, "create-key", "--role", "admin").stdout.decode().strip()
    gateway_key = cli(data_dir, "create-key", "--role", "gateway").stdout.decode().strip()
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=10
    ) as admin:
        add_model_m(admin)
        accounts = []
        for _ in range(ACCOUNTS):
            acc = admin.post("/v1/accounts", json={"name": "C", "currency": "USD"}).json()["id"]
            r = admin.post(
                f"/v1/accounts/{acc}/topups", json={"amount": "100.00", "method": "bank_transfer"}
            )
            assert r.status_code == 201, r.text
            accounts.append(acc)
    return admin_key, gateway_key, accounts


def top_ups(url: str, admin_key: str, accounts: list[str]) -> None:
    """Top every account up by 1.00, TOPUPS_PER_ACCOUNT times, each retried until answered."""
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=5
    ) as c:
        for n in range(TOPUPS_PER_ACCOUNT):
            for acc in accounts:
                resp = post_until_answered(
                    c,
                    f"/v1/accounts/{acc}/topups",
                    {"amount": "1.00", "method": "bank_transfer"},
                    key=f"topup-{acc}-{n}",
                )
                assert resp.status_code == 201, resp.text
            time.sleep(0.1)


def load_and_kill(
    url: str, data_dir: Path, keys: tuple[str, str], accounts: list[str]
) -> ClientStats:
    """Send RECORDS usage records and the top-ups, SIGKILL PostgreSQL mid-stream, wait it out.

    Returns the gateway client's statistics once everything it was given is flushed.
    """
    admin_key, gateway_key = keys
    gateway = TokenwalletClient(
        url,
        gateway_key,
        max_batch=100,
        flush_interval_s=0.05,
        timeout_s=3,
        retry_max_s=90,
        backoff_base_s=0.05,
        backoff_max_s=0.5,
    )
    with gateway:
        crediting = threading.Thread(target=top_ups, args=(url, admin_key, accounts))
        crediting.start()

        def report() -> None:
            for n in range(RECORDS):
                gateway.report(
                    {"id": f"r-{n}", "account_id": accounts[n % ACCOUNTS], "model": "m", **CALL}
                )
                time.sleep(0.003)

        reporter = threading.Thread(target=report)
        reporter.start()
        wait_for(lambda: gateway.stats().charged >= 300, 60, "usage to flow")
        killed = postmaster_pid(data_dir)
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: postmaster_pid(data_dir) not in (None, killed), 60, "the restart")
        reporter.join()
        crediting.join()
        gateway.flush(timeout=120)
        return gateway.stats()


def test_postgres_killed_under_load_loses_and_doubles_nothing(tmp_path):
    """Load, kill, restart and the final reconciliation of what was sent against the ledger."""
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    proc, port = start(data_dir, log)
    url = f"http://127.0.0.1:{port}"
    try:
        admin_key, gateway_key, accounts = set_up(url, data_dir)
        stats = load_and_kill(url, data_dir, (admin_key, gateway_key), accounts)

        assert stats.rejected == {}
        assert stats.charged + stats.duplicate == RECORDS
        assert stats.retries > 0, "the kill did not interrupt the stream"
        per_account = RECORDS // ACCOUNTS
        admin = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=10
        )
        for acc in accounts:
            b = admin.get(f"/v1/accounts/{acc}/balance").json()
            expected = Decimal("100.00") + TOPUPS_PER_ACCOUNT - per_account * CALL_COST
            assert Decimal(b["paid"]) == expected, (acc, b)
            assert Decimal(b["held"]) == 0
        audit = cli(data_dir, "db", "audit")
        assert audit.returncode == 0, audit.stdout.decode() + audit.stderr.decode()
        admin.close()
    finally:
        stop(proc)
    assert postmaster_pid(data_dir) is None
