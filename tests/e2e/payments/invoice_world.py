"""The world of the invoice card payment tests.

October 2026 billed through the API (the app's clock is injected): Acme and Globex, postpaid
and taxed at 20 %, each owe 21.60 USD; the client, keys and helpers to pay, deliver webhooks
and read the books.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from litestar.testing import TestClient
from sqlalchemy.orm import Session

from api.app import create_app
from api.auth import ApiKeyAuthMiddleware
from api.settings import Settings
from invoicing.payments.stripe_gateway import StripeGateway
from tests.e2e.payments import card
from tests.helpers import Clock, add_model_m, new_key, ok, problem
from tests.stripe_fakes import API_KEY, WEBHOOK_SECRET, FakeStripeHTTP

USD = 10**18


class World:
    """The app, its keys, and the two invoices of October."""

    def __init__(self, client: TestClient, fake: FakeStripeHTTP, engine, keys: dict) -> None:
        self.client, self.fake, self.engine, self.keys = client, fake, engine, keys
        self.accounts: dict[str, dict] = {}
        self.invoices: dict[str, dict] = {}

    def post(self, path, body=None, *, who="admin", status=201, **headers):
        return ok(self.client.post(path, json=body, headers={**self.keys[who], **headers}), status)

    def get(self, path, who="finance"):
        return ok(self.client.get(path, headers=self.keys[who]), 200)

    def invoice(self, name: str) -> dict:
        return self.get(f"/v1/invoices/{self.invoices[name]['id']}")

    def pay_url(self, name: str) -> str:
        return f"/v1/invoices/{self.invoices[name]['id']}/payments"

    def start(
        self, name: str, *, who: str = "acme", status: int = 202, key: str | None = None, **body
    ) -> dict:
        headers = {"Idempotency-Key": key} if key else {}
        return self.post(
            self.pay_url(name), {"method": "stripe", **body}, who=who, status=status, **headers
        )

    def refused(self, name: str, who: str, status: int, code: str, **body) -> dict:
        """A payment of invoice ``name`` asked by ``who`` (by card unless ``body`` says): refused.

        Returns the problem's body, which must have ``status`` and ``code``.
        """
        resp = self.client.post(
            self.pay_url(name), json={"method": "stripe", **body}, headers=self.keys[who]
        )
        return problem(resp, status, code)

    def deliver(self, evt):
        return card.deliver(self.client, evt)

    def completed(self, payment_id: str, *, pi: str | None = None):
        return card.completed(self.fake, payment_id, pi=pi)

    def pay(self, payment_id: str) -> str:
        return card.pay(self.client, self.fake, payment_id)

    def balance(self, name: str) -> dict:
        return self.get(f"/v1/accounts/{self.accounts[name]['id']}/balance", "admin")

    def ledger(self, code: str, owner: str | None = None) -> int:
        with Session(self.engine) as s:
            return s.execute(
                sa.text(
                    "SELECT coalesce(sum(p.amount), 0) FROM ledger_postings p"
                    " JOIN ledger_accounts a ON a.id = p.account_id"
                    " WHERE a.code = :code AND a.owner_id IS NOT DISTINCT FROM :owner"
                    " AND p.phase = 0"
                ),
                {"code": code, "owner": owner},
            ).scalar_one()

    def receivable(self, name: str) -> int:
        return self.ledger("receivable:invoiced", self.accounts[name]["id"])

    def count(self, table: str) -> int:
        with Session(self.engine) as s:
            return s.scalar(sa.text(f"SELECT count(*) FROM {table}"))

    def books_tie(self) -> None:
        tb = self.get("/v1/reports/trial-balance?currency=USD&as_of=2027-01-01T00:00:00Z")
        assert tb["summary"]["balanced"] is True
        aging = self.get("/v1/reports/receivables-aging?currency=USD&as_of=2027-01-01")
        assert aging["summary"]["ties"] is True


def open_accounts(w: World, engine) -> None:
    """Acme, Globex and Other: postpaid (100.00 of credit, net 30, VAT 20 %), each with a key."""
    for name in ("acme", "globex", "other"):
        w.accounts[name] = w.post(
            "/v1/accounts",
            {
                "name": name.title(),
                "currency": "USD",
                "credit_limit": "100",
                "billing": {"net_terms_days": 30, "tax_profile": "vat20"},
            },
        )
        key = new_key(engine, "customer", w.accounts[name]["id"])
        w.keys[name] = {"Authorization": f"Bearer {key}"}


def bill_october(w: World, clock: Clock) -> None:
    """18.00 of usage each for Acme and Globex on 10 October, then October closed as drafts."""
    clock.now = datetime(2026, 10, 10, 12, tzinfo=UTC)
    for i, name in enumerate(("acme", "globex")):
        record = {
            "id": f"u{i}",
            "account_id": w.accounts[name]["id"],
            "model": "m",
            "occurred_at": clock.now.isoformat(),
            "input_tokens": 1_000_000,
            "output_tokens": 1_000_000,
        }
        (r,) = w.post("/v1/usage", {"records": [record]}, who="gateway", status=200)["results"]
        assert (r["status"], r["billed"]["amount"]) == ("charged", "18.00")
    clock.now = datetime(2026, 11, 2, 9, tzinfo=UTC)
    closed = w.post(
        "/v1/billing-periods/2026-10/close", {"finalize": False}, who="finance", status=200
    )
    by_account = {i["account_id"]: i for i in closed["invoices"]}
    for name in ("acme", "globex"):
        w.invoices[name] = by_account[w.accounts[name]["id"]]


def make_world(engine, fake):
    """Build the world; yields it while its client is open.

    Acme and Globex (postpaid, VAT 20 %) each owe 21.60 USD on a finalized October invoice
    (Globex's is left a draft until a test finalizes it); Other is a third customer.
    """
    ApiKeyAuthMiddleware._cache.clear()
    clock = Clock(datetime(2026, 10, 1, 9, tzinfo=UTC))
    gateway = StripeGateway(API_KEY, WEBHOOK_SECRET, http_client=fake, max_network_retries=0)
    keys = {r: new_key(engine, r) for r in ("admin", "finance", "gateway")}
    app = create_app(engine, settings=Settings(), clock=clock, payment_gateway=gateway)
    with TestClient(app) as client:
        hdr = {r: {"Authorization": f"Bearer {k}"} for r, k in keys.items()}
        w = World(client, fake, engine, hdr)
        add_model_m(client, headers=w.keys["admin"])
        w.post("/v1/tax-profiles", {"id": "vat20", "rate_pct": "20"}, who="finance")
        open_accounts(w, engine)
        bill_october(w, clock)
        w.post(f"/v1/invoices/{w.invoices['acme']['id']}/finalize", who="finance", status=200)
        inv = w.invoice("acme")
        assert (inv["status"], inv["totals"]["balance_due"]["amount"]) == ("finalized", "21.60")
        yield w
