"""A month through the HTTP API, then the close.

Catalog, a prepaid customer (package and plan), a postpaid customer (net 30, VAT 20 %, a little
prepaid credit too), a reseller with two sub-accounts, top-ups, usage with failed requests; every
invoice line and total to the cent (tax on everything consumed, each record's tokens counted once),
the numbering, the PDF, payments, credit notes, and reports that tie (trial balance zero,
rollforward). The app's clock is injected, so the month is March 2026 whatever day the tests run.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from pypdf import PdfReader
from sqlalchemy.orm import Session

from api.app import create_app
from api.auth import ApiKeyAuthMiddleware, create_key
from tests.helpers import Clock, add_model_m, ok, package, plan, problem

JAN = datetime(2026, 1, 1, tzinfo=UTC)


def march(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(march(1, 9))


@pytest.fixture
def api(engine, clock):
    ApiKeyAuthMiddleware._cache.clear()
    with Session(engine) as s:
        keys = {role: create_key(s, role=role).secret for role in ("admin", "finance", "gateway")}
        s.commit()
    with TestClient(create_app(engine, clock=clock)) as client:
        yield client, {role: {"Authorization": f"Bearer {k}"} for role, k in keys.items()}


class Month:
    """The test client with the admin, finance and gateway keys, the clock and a record counter."""

    def __init__(self, client: TestClient, keys: dict[str, dict[str, str]], clock: Clock) -> None:
        self.client, self.clock = client, clock
        self.admin, self.finance, self.gateway = keys["admin"], keys["finance"], keys["gateway"]
        self.n = iter(range(1, 1000))

    def post(self, path: str, body: Any, headers: Any = None, status: int = 201) -> Any:
        """POST ``body`` as admin (unless ``headers`` say otherwise); the JSON of ``status``."""
        headers = self.admin if headers is None else headers
        return ok(self.client.post(path, json=body, headers=headers), status)

    def get(self, path: str, headers: Any = None) -> Any:
        """GET as finance (unless ``headers`` say otherwise); the JSON of a 200."""
        headers = self.finance if headers is None else headers
        return ok(self.client.get(path, headers=headers), 200)

    def usage(self, acc: dict[str, Any], when: datetime, count: int = 1, **kw: Any) -> None:
        """Send ``count`` records of 1,000 + 1,000 tokens at ``when``; each must be charged."""
        self.clock.now = when
        records = [
            {
                "id": f"r{next(self.n)}",
                "account_id": acc["id"],
                "model": "m",
                "occurred_at": when.isoformat(),
                "input_tokens": 1000,
                "output_tokens": 1000,
                **kw,
            }
            for _ in range(count)
        ]
        results = self.post("/v1/usage", {"records": records}, self.gateway, 200)["results"]
        assert {r["status"] for r in results} == {"charged"}, results


def lines(inv: dict[str, Any]) -> list[tuple[Any, ...]]:
    """An invoice's lines as (kind, settlement, amount, tax, requests, tokens)."""
    return [
        (ln["kind"], ln["settlement"], ln["amount"]["amount"], ln["tax"]["amount"],
         ln["requests"], ln["tokens"])
        for ln in inv["lines"]
    ]  # fmt: skip


def totals(inv: dict[str, Any]) -> tuple[str, ...]:
    """An invoice's subtotal, tax, total, prepaid applied, amount due and balance due."""
    t = inv["totals"]
    keys = ("subtotal", "tax", "total", "prepaid_applied", "amount_due", "balance_due")
    return tuple(t[k]["amount"] for k in keys)


def set_up_the_catalog(m: Month) -> None:
    """Model m at 3/15 per Mtok, a 10 % bonus from 100.00, a package, a plan and VAT 20 %."""
    add_model_m(m.client, JAN, m.admin)
    m.post(
        "/v1/topup-bonus-rules",
        {
            "currency": "USD",
            "effective_from": JAN.isoformat(),
            "tiers": [{"min_amount": "100.00", "bonus_pct": "10"}],
        },
    )
    m.post("/v1/packages", package("pk", "Starter 1M", "9.00", 1_000_000, "m"))
    m.post("/v1/plans", plan("coder", "20.00", "wallet", ("monthly", "requests", 2)))
    m.post("/v1/tax-profiles", {"id": "vat20", "name": "VAT 20 %", "rate_pct": "20"}, m.finance)


def open_the_accounts(m: Month) -> dict[str, dict[str, Any]]:
    """Acme (prepaid), Globex (net 30, VAT 20 %), Resell (100 % markup) and its two subs."""
    acme = m.post("/v1/accounts", {"name": "Acme", "currency": "USD"})
    globex = m.post(
        "/v1/accounts",
        {
            "name": "Globex",
            "currency": "USD",
            "credit_limit": "50",
            "billing": {"net_terms_days": 30, "tax_profile": "vat20"},
        },
    )
    assert globex["billing"]["net_terms_days"] == 30
    patched = ok(
        m.client.patch(
            f"/v1/accounts/{globex['id']}",
            json={"billing": {"legal_name": "Globex GmbH", "billing_address": "1 Main St"}},
            headers=m.finance,
        ),
        200,
    )
    assert patched["billing"] == {
        "net_terms_days": 30,
        "tax_profile": "vat20",
        "legal_name": "Globex GmbH",
        "billing_address": "1 Main St",
        "tax_id": None,
        "billing_email": None,
        "settle_from_prepaid": False,
    }
    resell = m.post(
        "/v1/accounts",
        {"name": "Resell", "currency": "USD", "kind": "reseller", "credit_limit": "100"},
    )
    m.post(
        "/v1/reseller-price-books",
        {
            "reseller_account_id": resell["id"],
            "currency": "USD",
            "markup_pct": "100",
            "effective_from": JAN.isoformat(),
        },
    )
    s1 = m.post("/v1/accounts", {"name": "Sub One", "currency": "USD", "parent_id": resell["id"]})
    s2 = m.post("/v1/accounts", {"name": "Sub Two", "currency": "USD", "parent_id": resell["id"]})
    return {"acme": acme, "globex": globex, "resell": resell, "s1": s1, "s2": s2}


def put_money_in(m: Month, accs: dict[str, dict[str, Any]]) -> None:
    """Top-ups for everyone, then Acme buys the package and subscribes to the plan."""
    for who, amount, method in (
        ("acme", "100.00", "bank_transfer"),
        ("globex", "0.05", "bank_transfer"),  # pays its first 0.05 of usage, then overage
        ("resell", "10.00", "bank_transfer"),
        ("s1", "50.00", "reseller"),
        ("s2", "50.00", "reseller"),
    ):
        headers = m.finance if method == "bank_transfer" else m.admin  # "reseller": its own
        body = {"amount": amount, "method": method}
        m.post(f"/v1/accounts/{accs[who]['id']}/topups", body, headers)
    m.clock.now = march(2)
    m.post(f"/v1/accounts/{accs['acme']['id']}/package-purchases", {"package_id": "pk"})
    m.clock.now = march(2, 13)
    m.post(f"/v1/accounts/{accs['acme']['id']}/subscriptions", {"plan_id": "coder"})


def use_the_month(m: Month, accs: dict[str, dict[str, Any]]) -> None:
    """Usage through March, with a failed request (502) for each invoiced account."""
    acme, globex = accs["acme"], accs["globex"]
    m.usage(acme, march(5), 3)  # two plan requests, one from the package
    m.usage(acme, march(5, 14), http_status=502)  # provider error: not billed
    m.usage(globex, march(10), 5)  # 0.05 from prepaid credit, 0.04 overage
    m.usage(globex, march(11), input_tokens=333_333, output_tokens=1)  # 1.000014
    m.usage(globex, march(11, 13), http_status=502)
    big = {"input_tokens": 2_000_000, "output_tokens": 200_000}  # wholesale 9.00, retail 18.00
    m.usage(accs["s1"], march(20), **big)
    m.usage(accs["s2"], march(21), **big)  # the float: 1.00 paid + 8.00 overage
    m.usage(accs["s2"], march(21, 13), http_status=502)


def close_march(m: Month, accs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Close March (refused too early, then idempotent); the invoices by account name."""
    # too early: the grace period (24 h by default) has not passed
    m.clock.now = datetime(2026, 4, 1, 12, tzinfo=UTC)
    close = "/v1/billing-periods/2026-03/close"
    problem(m.client.post(close, headers=m.finance), 409, "period_not_ended")
    problem(
        m.client.post("/v1/billing-periods/2026-13/close", headers=m.finance),
        400,
        "invalid_period",
    )
    m.clock.now = datetime(2026, 4, 2, tzinfo=UTC)
    closed = m.post(close, None, m.finance, 200)
    assert (closed["status"], closed["accounts"], len(closed["invoices"])) == ("closed", 3, 3)
    again = m.post(close, None, m.finance, 200)
    assert [i["id"] for i in again["invoices"]] == [i["id"] for i in closed["invoices"]]
    listed = m.get("/v1/invoices?period=2026-03")["data"]
    by_account = {i["account_id"]: i for i in listed}
    names = ("acme", "globex", "resell")
    assert set(by_account) == {accs[name]["id"] for name in names}
    numbers = [by_account[accs[name]["id"]]["number"] for name in names]
    assert numbers == ["INV-USD-2026-000001", "INV-USD-2026-000002", "INV-USD-2026-000003"]
    return {name: m.get(f"/v1/invoices/{by_account[accs[name]['id']]['id']}") for name in names}


def check_the_invoices(invoices: dict[str, dict[str, Any]]) -> None:
    """Every line and total of the three invoices, to the cent."""
    inv_acme = invoices["acme"]
    assert lines(inv_acme) == [
        ("plan_fee", "prepaid", "20.00", "0.00", 1, 0),
        ("package", "prepaid", "9.00", "0.00", 1, 1_000_000),
        ("prepaid_usage", "info", "0.00", "0.00", 3, 6000),
        ("failed_request_credit", "info", "0.02", "0.00", 1, 2000),
    ]
    assert totals(inv_acme) == ("29.00", "0.00", "29.00", "29.00", "0.00", "0.00")
    assert inv_acme["status"] == "paid" and inv_acme["due_date"] == "2026-04-02"
    assert inv_acme["lines"][3]["details"]["reason"] == "provider_error:not_billed"

    inv_globex = invoices["globex"]
    # everything consumed is taxed: the overage and the 0.05 the prepaid balance paid (its net
    # settled by the balance, its tax due). The third record was paid 0.014 from credit and
    # 0.004 as overage: one request, on the overage line, its 2,000 tokens shared 444/1,556.
    assert lines(inv_globex) == [
        ("overage", "due", "1.04", "0.21", 4, 337_778),
        ("prepaid_usage", "prepaid", "0.05", "0.01", 2, 5_556),
        ("failed_request_credit", "info", "0.02", "0.00", 1, 2000),
    ]
    assert inv_globex["lines"][0]["amount_exact"]["amount"] == "1.040014"
    assert inv_globex["lines"][0]["tax_rate_pct"] == "20"
    assert inv_globex["lines"][1]["taxable"]["amount"] == "0.05"
    assert inv_globex["lines"][1]["details"]["requests_shared_with_overage"] == 1
    assert totals(inv_globex) == ("1.09", "0.22", "1.31", "0.05", "1.26", "1.26")
    assert inv_globex["totals"]["rounding"]["amount"] == "-0.000014"
    assert (inv_globex["status"], inv_globex["due_date"], inv_globex["overdue"]) == (
        "finalized",
        "2026-05-02",
        False,
    )
    assert inv_globex["bill_to"]["name"] == "Globex GmbH"

    # 4.4M tokens used, 4.4M on the invoice: Sub Two's record (1.00 from the float, 8.00
    # overage) is counted once, its tokens shared 1:8; no tax profile, so no tax
    assert lines(invoices["resell"]) == [
        ("overage", "due", "8.00", "0.00", 1, 1_955_555),
        ("prepaid_usage", "prepaid", "10.00", "0.00", 1, 2_444_445),
        ("failed_request_credit", "info", "0.02", "0.00", 1, 2000),
    ]
    assert totals(invoices["resell"]) == ("18.00", "0.00", "18.00", "10.00", "8.00", "8.00")


def check_the_reports(m: Month, accs: dict[str, dict[str, Any]]) -> None:
    """The trial balance sums to zero in every book, the rollforward and the others tie."""
    tb = m.get("/v1/reports/trial-balance?currency=USD&as_of=2026-04-02T00:00:00Z")
    assert tb["summary"]["balanced"] is True
    for book, sums in tb["summary"]["books"].items():
        assert sums["net"] == "0.00", book
    codes = {(r["book"], r["code"]): r["balance"] for r in tb["rows"]}
    assert codes[("operator", "receivable:invoiced")] == "9.26"
    assert codes[("operator", "receivable:unbilled")] == "0.00"
    assert codes[("operator", "tax:payable")] == "-0.22"
    roll = m.get("/v1/reports/prepaid-liability?period=2026-03&currency=USD")
    assert roll["summary"]["ties"] is True
    movements = {r["line"]: r["total"] for r in roll["rows"]}
    assert movements == {
        "opening": "0.00",
        "purchased": "110.05",
        "bonus_granted": "10.00",
        "consumed": "-39.05",
        "expired": "0.00",
        "refunded": "0.00",
        "credited": "0.00",
        "invoices_paid": "0.00",
        "other": "0.00",
        "closing": "81.00",
    }
    assert m.get(f"/v1/accounts/{accs['acme']['id']}/balance", m.admin)["paid"] == "81.00"
    csv_text = m.client.get(
        "/v1/reports/prepaid-liability?period=2026-03&currency=USD&format=csv", headers=m.finance
    )
    assert csv_text.headers["content-type"].startswith("text/csv")
    assert csv_text.text.splitlines()[0] == "line,paid,bonus,total"
    revenue = m.get("/v1/reports/revenue-by-model?period=2026-03&currency=USD")
    assert revenue["summary"]["ties"] is True and revenue["rows"][0]["revenue"] == "19.090014"
    resell_id = accs["resell"]["id"]
    statement = m.get(f"/v1/reports/reseller-statement?reseller_id={resell_id}&period=2026-03")
    assert statement["summary"]["margin"] == "18.00"


def check_the_pdf(m: Month, inv_globex: dict[str, Any]) -> None:
    """The PDF of a real invoice: its number, amount due and customer; no tax base shown."""
    pdf = m.client.get(f"/v1/invoices/{inv_globex['id']}/pdf", headers=m.finance)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "INV-USD-2026-000002" in text and "$1.26 USD" in text and "Globex GmbH" in text
    assert "(20% of $0.05)" not in text  # the whole line was paid with money: no base shown


def pay_and_credit(m: Month, inv_globex: dict[str, Any], inv_resell: dict[str, Any]) -> None:
    """Payments (idempotent per reference), credit notes (own series) and the aging report."""
    m.clock.now = datetime(2026, 4, 20, tzinfo=UTC)
    pay = {"amount": "1.26", "method": "bank_transfer", "reference": "BANK-2026-0420-1"}
    first = m.post(f"/v1/invoices/{inv_globex['id']}/payments", pay, m.finance)
    repeat = m.post(f"/v1/invoices/{inv_globex['id']}/payments", pay, m.finance)
    assert repeat["id"] == first["id"]
    reused = m.client.post(  # the same reference for another invoice: a clear 409
        f"/v1/invoices/{inv_resell['id']}/payments",
        json={**pay, "amount": "1.00"},
        headers=m.finance,
    )
    problem(reused, 409, "idempotency_conflict")
    assert f"already recorded as {first['id']}" in reused.json()["detail"]
    assert m.get(f"/v1/invoices/{inv_globex['id']}")["status"] == "paid"
    notes = f"/v1/invoices/{inv_resell['id']}/credit-notes"
    problem(
        m.client.post(
            notes,
            json={"amount": "1.00", "lines": [{"line_id": 1}], "reason": "x"},
            headers=m.finance,
        ),
        400,
        "validation_error",
    )
    note = m.post(notes, {"amount": "2.00", "reason": "goodwill"}, m.finance)
    assert (note["number"], note["total"]["amount"]) == ("CN-USD-2026-000001", "2.00")
    problem(
        m.client.post(notes, json={"amount": "6.01", "reason": "too much"}, headers=m.finance),
        422,
        "credit_exceeds_invoice",
    )
    resell_after = m.get(f"/v1/invoices/{inv_resell['id']}")
    assert resell_after["totals"]["balance_due"]["amount"] == "6.00"
    assert [c["number"] for c in resell_after["credit_notes"]] == ["CN-USD-2026-000001"]
    aging = m.get("/v1/reports/receivables-aging?currency=USD&as_of=2026-05-10")
    assert aging["summary"]["ties"] is True and aging["summary"]["total"] == "6.00"
    assert aging["rows"][0]["bucket"] == "31-60"  # due on receipt, 2026-04-02
    assert m.get(f"/v1/invoices/{inv_resell['id']}")["overdue"] is True


def check_who_sees_what(m: Month, engine: Any, acme: dict[str, Any], inv_globex: Any) -> None:
    """The gateway sees no invoices, a customer only its own; the paths are in the schema."""
    # the gateway may not see invoices; finance may not be refused for the close
    problem(m.client.get("/v1/invoices", headers=m.gateway), 403, "forbidden")
    tb = m.get("/v1/reports/trial-balance?currency=USD")
    assert tb["summary"]["balanced"] is True
    # a customer sees its own invoices only; another account's invoice is 404, not 403
    with Session(engine) as s:
        customer_key = create_key(s, role="customer", account_id=acme["id"]).secret
        s.commit()
    own = {"Authorization": f"Bearer {customer_key}"}
    mine = m.get("/v1/invoices", own)["data"]
    assert [i["account_id"] for i in mine] == [acme["id"]]
    problem(m.client.get(f"/v1/invoices/{inv_globex['id']}", headers=own), 404, "not_found")
    problem(m.client.get(f"/v1/invoices/{inv_globex['id']}/pdf", headers=own), 404, "not_found")
    problem(m.client.get("/v1/reports/trial-balance?currency=USD", headers=own), 403, "forbidden")
    schema = m.get("/schema/openapi.json", m.admin)["paths"]
    for path in (
        "/v1/billing-periods/{period}/close",
        "/v1/invoices/{invoice_id}/pdf",
        "/v1/invoices/{invoice_id}/credit-notes",
        "/v1/reports/prepaid-liability",
    ):
        assert path in schema, path


def test_a_month_through_the_api_then_the_close(api, clock, engine):
    """A month through the API and its close, one story told in named steps.

    Each step depends on the balances, invoices and numbers the steps before it left.
    """
    m = Month(*api, clock)
    set_up_the_catalog(m)
    accs = open_the_accounts(m)
    put_money_in(m, accs)
    use_the_month(m, accs)
    invoices = close_march(m, accs)
    check_the_invoices(invoices)
    check_the_reports(m, accs)
    check_the_pdf(m, invoices["globex"])
    pay_and_credit(m, invoices["globex"], invoices["resell"])
    check_who_sees_what(m, engine, accs["acme"], invoices["globex"])


def test_scheduler_job_closes_the_previous_month_once(session_factory):
    from api.scheduler import default_jobs
    from api.settings import Settings
    from invoicing.close import close_due, due_period

    assert any(j.name == "billing_close" for j in default_jobs(Settings()))
    grace = timedelta(hours=24)
    assert due_period(datetime(2026, 4, 1, 12, tzinfo=UTC), grace) is None
    at = datetime(2026, 4, 2, 1, tzinfo=UTC)
    assert str(due_period(at, grace)) == "2026-03"
    with session_factory.begin() as s:  # the job's transaction (it holds the job's lock)
        result = close_due(s, grace=grace, now=at)
    assert result is not None and str(result.period) == "2026-03"
    with session_factory.begin() as s:  # closed: the next tick does nothing
        assert close_due(s, grace=grace, now=at + timedelta(hours=1)) is None
