"""Shared test helpers: response assertions and factories for what most API tests set up first.

The assertions work on any response with ``status_code``, ``headers``, ``text`` and ``json()``
(Litestar's TestClient and httpx alike); the factories call the API as an admin client, or
the database for API keys (keys are never created over HTTP in a test's setup).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.auth import create_key
from ledger.base import utcnow

PROBLEM_JSON = "application/problem+json"
JAN_2026 = datetime(2026, 1, 1, tzinfo=UTC)
#: Top-up bonus tiers: 5 % from 100.00, 10 % (expiring after 30 days) from 500.00.
BONUS_TIERS: list[dict[str, Any]] = [
    {"min_amount": "100.00", "bonus_pct": "5"},
    {"min_amount": "500.00", "bonus_pct": "10", "bonus_expires_days": 30},
]


class Clock:
    """A clock to inject into the app: it reads ``now``, which the test moves."""

    def __init__(self, now: datetime) -> None:
        """Start the clock at ``now``."""
        self.now = now

    def __call__(self) -> datetime:
        """The time the test has set."""
        return self.now


def ok(resp: Any, status: int = 201) -> Any:
    """The JSON body of a response that must have ``status`` (201 unless said)."""
    assert resp.status_code == status, resp.text
    return resp.json()


def problem(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The body of an RFC 9457 problem that must have ``status`` and, when given, ``code``."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON), resp.headers
    body: dict[str, Any] = resp.json()
    if code is not None:
        assert body["code"] == code, body
    assert body["status"] == status and body["detail"], body
    return body


def new_key(engine: Engine, role: str, account_id: str | None = None) -> str:
    """A new API key of ``role`` (bound to ``account_id`` when given); returns its secret."""
    with Session(engine) as s:
        key = create_key(s, role=role, account_id=account_id)
        s.commit()
    return key.secret


def key_headers(engine: Engine, role: str, account_id: str | None = None) -> dict[str, str]:
    """The Authorization header of a new API key of ``role`` (bound to ``account_id`` if given)."""
    return {"Authorization": f"Bearer {new_key(engine, role, account_id)}"}


def price(model: str, inp: str, out: str, **extra: Any) -> dict[str, Any]:
    """A rate card's price of ``model``: input and output per Mtok, and any other field."""
    return {"model": model, "input_per_mtok": inp, "output_per_mtok": out, **extra}


def package(
    package_id: str, name: str, price: str, tokens: int, *models: str, valid_days: int = 30
) -> dict[str, Any]:
    """A USD token package's body; ``models`` (when given) are the only models it covers."""
    body: dict[str, Any] = {
        "id": package_id,
        "name": name,
        "currency": "USD",
        "price": price,
        "tokens": tokens,
        "valid_days": valid_days,
    }
    if models:
        body["models"] = list(models)
    return body


def plan(
    plan_id: str, monthly_fee: str, on_exhausted: str, *windows: tuple[str, str, int]
) -> dict[str, Any]:
    """A USD coding plan's body, named after its id; each window is (kind, unit, limit)."""
    return {
        "id": plan_id,
        "name": plan_id.title(),
        "currency": "USD",
        "monthly_fee": monthly_fee,
        "windows": [{"kind": kind, "unit": unit, "limit": limit} for kind, unit, limit in windows],
        "on_exhausted": on_exhausted,
    }


def add_model_m(
    client: Any, effective_from: datetime = JAN_2026, headers: dict[str, str] | None = None
) -> None:
    """Model ``m`` (displayed as M) on a USD rate card of 3 in / 15 out per Mtok.

    Args:
        client: any HTTP client of the API; ``headers`` (when given) authorize the calls.
        effective_from: when the rate card takes effect (1 January 2026 unless said).
        headers: the headers of an admin key, for a client that sends none of its own.
    """
    model = {"id": "m", "provider": "acme", "display_name": "M"}
    ok(client.post("/v1/models", json=model, headers=headers))
    card = {
        "currency": "USD",
        "effective_from": effective_from.isoformat(),
        "prices": [price("m", "3", "15")],
    }
    ok(client.post("/v1/rate-cards", json=card, headers=headers))


def add_models(admin: Any, *model_ids: str, provider: str = "acme") -> None:
    """Add models to the catalog, each displayed under its own id."""
    for model_id in model_ids:
        ok(
            admin.post(
                "/v1/models", json={"id": model_id, "provider": provider, "display_name": model_id}
            )
        )


def add_rate_card(
    admin: Any, prices: list[dict[str, Any]], effective_from: Any, currency: str = "USD"
) -> dict[str, Any]:
    """Create a rate card of ``prices`` taking effect at ``effective_from`` (a datetime)."""
    body = {"currency": currency, "effective_from": effective_from.isoformat(), "prices": prices}
    return ok(admin.post("/v1/rate-cards", json=body))  # type: ignore[no-any-return]


def account(admin: Any, top_up: str | None = None, **fields: Any) -> dict[str, Any]:
    """A new USD account named C (``fields`` override), topped up by bank transfer if asked."""
    acc: dict[str, Any] = ok(
        admin.post("/v1/accounts", json={"name": "C", "currency": "USD", **fields})
    )
    if top_up:
        ok(
            admin.post(
                f"/v1/accounts/{acc['id']}/topups",
                json={"amount": top_up, "method": "bank_transfer"},
            )
        )
    return acc


def account_id(admin: Any, top_up: str | None = None) -> str:
    """The id of a new USD account named C, topped up by bank transfer if asked."""
    return str(account(admin, top_up)["id"])


def authorize(
    client: Any,
    headers: dict[str, str],
    acc: dict[str, Any],
    estimated_input: int,
    max_output: int,
    model: str = "m",
    **extra: Any,
) -> dict[str, Any]:
    """Authorize one call (one capture) for ``acc`` with a gateway's ``headers``; 201's body.

    Args:
        client: an HTTP client of the API.
        headers: the gateway key's headers.
        acc: the account, as the API answered it.
        estimated_input: the call's estimated input tokens.
        max_output: the call's output token limit.
        model: the model called (``m`` unless said).
        extra: any other field of the request (``ttl_seconds``).
    """
    body = {
        "account_id": acc["id"],
        "model": model,
        "estimated_input_tokens": estimated_input,
        "max_output_tokens": max_output,
        **extra,
    }
    return ok(client.post("/v1/authorizations", json=body, headers=headers))  # type: ignore[no-any-return]


def rec(rid: str, acc: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A usage record of model ``m`` for ``acc``: 1,000 input and 1,000 output tokens, now."""
    body = {
        "id": rid,
        "account_id": acc["id"],
        "model": "m",
        "occurred_at": utcnow().isoformat(),
        "input_tokens": 1000,
        "output_tokens": 1000,
    }
    body.update(fields)
    return body


def send(client: Any, headers: dict[str, str], *records: dict[str, Any]) -> list[dict[str, Any]]:
    """Send usage records in one batch; returns the per-record results."""
    resp = client.post("/v1/usage", json={"records": list(records)}, headers=headers)
    return ok(resp, 200)["results"]  # type: ignore[no-any-return]


def balance(admin: Any, acc: dict[str, Any]) -> dict[str, Any]:
    """The account's balance."""
    return ok(admin.get(f"/v1/accounts/{acc['id']}/balance"), 200)  # type: ignore[no-any-return]


def lock_waiters(session: Session, *wait_events: str) -> int:
    """Wait (about 30 s at most) for a backend to wait on a lock of one of ``wait_events``.

    Polls ``pg_stat_activity`` every 50 ms, ending ``session``'s transaction after each read so
    the next one sees the present; returns how many backends wait (0: none did in time).
    """
    waiting = 0
    for _ in range(600):
        waiting = session.scalar(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND wait_event = ANY(:events)"
            ),
            {"events": list(wait_events)},
        )
        session.rollback()
        if waiting:
            break
        threading.Event().wait(0.05)
    return waiting
