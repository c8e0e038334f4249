"""Fixtures of the card payment tests.

The real Stripe SDK over an offline HTTP client (``fake``), the app that uses it, a catalog
with bonus rules, a package and a plan, and the October invoices of ``invoice_world``.
"""

from __future__ import annotations

import pytest

from api.app import create_app
from api.auth import ApiKeyAuthMiddleware
from api.settings import Settings
from tests.e2e.payments.invoice_world import make_world
from tests.helpers import BONUS_TIERS, ok, package, plan


@pytest.fixture
def app(engine, gateway):
    ApiKeyAuthMiddleware._cache.clear()
    return create_app(engine, settings=Settings(), payment_gateway=gateway)


@pytest.fixture
def catalog(admin):
    ok(
        admin.post(
            "/v1/topup-bonus-rules",
            json={
                "currency": "USD",
                "tiers": BONUS_TIERS,
            },
        )
    )
    ok(admin.post("/v1/models", json={"id": "m-1", "provider": "acme", "display_name": "M"}))
    ok(admin.post("/v1/packages", json=package("pk-1m", "1M tokens", "9.00", 1_000_000)))
    ok(admin.post("/v1/plans", json=plan("coder", "20.00", "block", ("weekly", "requests", 10))))
    return admin


@pytest.fixture
def acc(catalog):
    return ok(catalog.post("/v1/accounts", json={"name": "Card Buyer", "currency": "USD"}))


@pytest.fixture
def world(engine, fake):
    """Acme and Globex each owe 21.60 USD on an October invoice (see ``invoice_world``)."""
    yield from make_world(engine, fake)
