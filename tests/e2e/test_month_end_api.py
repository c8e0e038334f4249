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

import pytest
from litestar.testing import TestClient
from pypdf import PdfReader
from sqlalchemy.orm import Session

from api.app import create_app
from api.auth import ApiKeyAuthMiddleware, create_key
from tests.helpers import ok, problem

JAN = datetime(2026, 1, 1, tzinfo=UTC)


def march(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = march(1, 9)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api(engine, clock):
    ApiKeyAuthMiddleware._cache.clear()
    with Session(engine) as s:
        keys = {role: create_key(s, role=role).secret for role in ("admin", "finance", "gateway")}
        s.commit()
    with TestClient(create_app(engine, clock=clock)) as client:
        yield client, {role: {"Authorization": f"Bearer {k}"} for role, k in keys.items()}


def test_a_month_through_the_api_then_the_close(api, clock, engine):
    """A month through the API and its close, kept as one story (over 60 lines on purpose).

    Each step depends on the balances, invoices and numbers the steps before it left.
    """
    client, keys = api
    admin, finance, gateway = keys["admin"], keys["finance"], keys["gateway"]

    def post(path, body, headers=admin, status=201):
        return ok(client.post(path, json=body, headers=headers), status)

    def get(path, headers=finance):
        return ok(client.get(path, headers=headers), 200)

    # catalog
    post("/v1/models", {"id": "m", "provider": "acme", "display_name": "M"})
    post(
        "/v1/rate-cards",
        {
            "currency": "USD",
            "effective_from": JAN.isoformat(),
            "prices": [{"model": "m", "input_per_mtok": "3", "output_per_mtok": "15"}],
        },
    )
    post(
        "/v1/topup-bonus-rules",
        {
            "currency": "USD",
            "effective_from": JAN.isoformat(),
            "tiers": [{"min_amount": "100.00", "bonus_pct": "10"}],
        },
    )
    post(
        "/v1/packages",
        {
            "id": "pk",
            "name": "Starter 1M",
            "currency": "USD",
            "price": "9.00",
            "tokens": 1_000_000,
            "models": ["m"],
            "valid_days": 30,
        },
    )
    post(
        "/v1/plans",
        {
            "id": "coder",
            "name": "Coder",
            "currency": "USD",
            "monthly_fee": "20.00",
            "windows": [{"kind": "monthly", "unit": "requests", "limit": 2}],
            "on_exhausted": "wallet",
        },
    )
    post("/v1/tax-profiles", {"id": "vat20", "name": "VAT 20 %", "rate_pct": "20"}, finance)
    # accounts
    acme = post("/v1/accounts", {"name": "Acme", "currency": "USD"})
    globex = post(
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
        client.patch(
            f"/v1/accounts/{globex['id']}",
            json={"billing": {"legal_name": "Globex GmbH", "billing_address": "1 Main St"}},
            headers=finance,
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
    resell = post(
        "/v1/accounts",
        {"name": "Resell", "currency": "USD", "kind": "reseller", "credit_limit": "100"},
    )
    post(
        "/v1/reseller-price-books",
        {
            "reseller_account_id": resell["id"],
            "currency": "USD",
            "markup_pct": "100",
            "effective_from": JAN.isoformat(),
        },
    )
    s1 = post("/v1/accounts", {"name": "Sub One", "currency": "USD", "parent_id": resell["id"]})
    s2 = post("/v1/accounts", {"name": "Sub Two", "currency": "USD", "parent_id": resell["id"]})
    # money in
    for acc, amount, method in (
        (acme, "100.00", "bank_transfer"),
        (globex, "0.05", "bank_transfer"),  # pays its first 0.05 of usage, then overage
        (resell, "10.00", "bank_transfer"),
        (s1, "50.00", "reseller"),
        (s2, "50.00", "reseller"),
    ):
        who = finance if method == "bank_transfer" else admin  # "reseller": the reseller's own
        post(f"/v1/accounts/{acc['id']}/topups", {"amount": amount, "method": method}, who)
    clock.now = march(2)
    post(f"/v1/accounts/{acme['id']}/package-purchases", {"package_id": "pk"})
    clock.now = march(2, 13)
    post(f"/v1/accounts/{acme['id']}/subscriptions", {"plan_id": "coder"})

    n = iter(range(1, 1000))

    def usage(acc, when, count=1, **kw):
        clock.now = when
        records = [
            {
                "id": f"r{next(n)}",
                "account_id": acc["id"],
                "model": "m",
                "occurred_at": when.isoformat(),
                "input_tokens": 1000,
                "output_tokens": 1000,
                **kw,
            }
            for _ in range(count)
        ]
        results = post("/v1/usage", {"records": records}, gateway, 200)["results"]
        assert {r["status"] for r in results} == {"charged"}, results

    usage(acme, march(5), 3)  # two plan requests, one from the package
    usage(acme, march(5, 14), http_status=502)  # provider error: not billed
    usage(globex, march(10), 5)  # 0.05 from prepaid credit, 0.04 overage
    usage(globex, march(11), input_tokens=333_333, output_tokens=1)  # 1.000014
    usage(globex, march(11, 13), http_status=502)
    big = {"input_tokens": 2_000_000, "output_tokens": 200_000}  # wholesale 9.00, retail 18.00
    usage(s1, march(20), **big)
    usage(s2, march(21), **big)  # the float: 1.00 paid + 8.00 overage
    usage(s2, march(21, 13), http_status=502)

    # too early: the grace period (24 h by default) has not passed
    clock.now = datetime(2026, 4, 1, 12, tzinfo=UTC)
    problem(
        client.post("/v1/billing-periods/2026-03/close", headers=finance), 409, "period_not_ended"
    )
    problem(
        client.post("/v1/billing-periods/2026-13/close", headers=finance), 400, "invalid_period"
    )
    # the close
    clock.now = datetime(2026, 4, 2, tzinfo=UTC)
    closed = post("/v1/billing-periods/2026-03/close", None, finance, 200)
    assert (closed["status"], closed["accounts"], len(closed["invoices"])) == ("closed", 3, 3)
    again = post("/v1/billing-periods/2026-03/close", None, finance, 200)
    assert [i["id"] for i in again["invoices"]] == [i["id"] for i in closed["invoices"]]
    listed = get("/v1/invoices?period=2026-03")["data"]
    by_account = {i["account_id"]: i for i in listed}
    assert set(by_account) == {acme["id"], globex["id"], resell["id"]}
    numbers = [by_account[a["id"]]["number"] for a in (acme, globex, resell)]
    assert numbers == ["INV-USD-2026-000001", "INV-USD-2026-000002", "INV-USD-2026-000003"]

    def lines(inv):
        return [
            (ln["kind"], ln["settlement"], ln["amount"]["amount"], ln["tax"]["amount"],
             ln["requests"], ln["tokens"])
            for ln in inv["lines"]
        ]  # fmt: skip

    def totals(inv):
        t = inv["totals"]
        keys = ("subtotal", "tax", "total", "prepaid_applied", "amount_due", "balance_due")
        return tuple(t[k]["amount"] for k in keys)

    inv_acme = get(f"/v1/invoices/{by_account[acme['id']]['id']}")
    assert lines(inv_acme) == [
        ("plan_fee", "prepaid", "20.00", "0.00", 1, 0),
        ("package", "prepaid", "9.00", "0.00", 1, 1_000_000),
        ("prepaid_usage", "info", "0.00", "0.00", 3, 6000),
        ("failed_request_credit", "info", "0.02", "0.00", 1, 2000),
    ]
    assert totals(inv_acme) == ("29.00", "0.00", "29.00", "29.00", "0.00", "0.00")
    assert inv_acme["status"] == "paid" and inv_acme["due_date"] == "2026-04-02"
    assert inv_acme["lines"][3]["details"]["reason"] == "provider_error:not_billed"

    inv_globex = get(f"/v1/invoices/{by_account[globex['id']]['id']}")
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

    inv_resell = get(f"/v1/invoices/{by_account[resell['id']]['id']}")
    # 4.4M tokens used, 4.4M on the invoice: Sub Two's record (1.00 from the float, 8.00
    # overage) is counted once, its tokens shared 1:8; no tax profile, so no tax
    assert lines(inv_resell) == [
        ("overage", "due", "8.00", "0.00", 1, 1_955_555),
        ("prepaid_usage", "prepaid", "10.00", "0.00", 1, 2_444_445),
        ("failed_request_credit", "info", "0.02", "0.00", 1, 2000),
    ]
    assert totals(inv_resell) == ("18.00", "0.00", "18.00", "10.00", "8.00", "8.00")

    # the ledger: trial balance sums to zero in every book, the rollforward ties
    tb = get("/v1/reports/trial-balance?currency=USD&as_of=2026-04-02T00:00:00Z")
    assert tb["summary"]["balanced"] is True
    for book, sums in tb["summary"]["books"].items():
        assert sums["net"] == "0.00", book
    codes = {(r["book"], r["code"]): r["balance"] for r in tb["rows"]}
    assert codes[("operator", "receivable:invoiced")] == "9.26"
    assert codes[("operator", "receivable:unbilled")] == "0.00"
    assert codes[("operator", "tax:payable")] == "-0.22"
    roll = get("/v1/reports/prepaid-liability?period=2026-03&currency=USD")
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
    assert get(f"/v1/accounts/{acme['id']}/balance", admin)["paid"] == "81.00"
    csv_text = client.get(
        "/v1/reports/prepaid-liability?period=2026-03&currency=USD&format=csv", headers=finance
    )
    assert csv_text.headers["content-type"].startswith("text/csv")
    assert csv_text.text.splitlines()[0] == "line,paid,bonus,total"
    revenue = get("/v1/reports/revenue-by-model?period=2026-03&currency=USD")
    assert revenue["summary"]["ties"] is True and revenue["rows"][0]["revenue"] == "19.090014"
    statement = get(f"/v1/reports/reseller-statement?reseller_id={resell['id']}&period=2026-03")
    assert statement["summary"]["margin"] == "18.00"

    # the PDF of a real invoice
    pdf = client.get(f"/v1/invoices/{inv_globex['id']}/pdf", headers=finance)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "INV-USD-2026-000002" in text and "$1.26 USD" in text and "Globex GmbH" in text
    assert "(20% of $0.05)" not in text  # the whole line was paid with money: no base shown

    # payments (idempotent per reference) and credit notes (own series)
    clock.now = datetime(2026, 4, 20, tzinfo=UTC)
    pay = {"amount": "1.26", "method": "bank_transfer", "reference": "BANK-2026-0420-1"}
    first = post(f"/v1/invoices/{inv_globex['id']}/payments", pay, finance)
    repeat = post(f"/v1/invoices/{inv_globex['id']}/payments", pay, finance)
    assert repeat["id"] == first["id"]
    reused = client.post(  # the same reference for another invoice: a clear 409
        f"/v1/invoices/{inv_resell['id']}/payments", json={**pay, "amount": "1.00"}, headers=finance
    )
    problem(reused, 409, "idempotency_conflict")
    assert f"already recorded as {first['id']}" in reused.json()["detail"]
    assert get(f"/v1/invoices/{inv_globex['id']}")["status"] == "paid"
    problem(
        client.post(
            f"/v1/invoices/{inv_resell['id']}/credit-notes",
            json={"amount": "1.00", "lines": [{"line_id": 1}], "reason": "x"},
            headers=finance,
        ),
        400,
        "validation_error",
    )
    note = post(
        f"/v1/invoices/{inv_resell['id']}/credit-notes",
        {"amount": "2.00", "reason": "goodwill"},
        finance,
    )
    assert (note["number"], note["total"]["amount"]) == ("CN-USD-2026-000001", "2.00")
    problem(
        client.post(
            f"/v1/invoices/{inv_resell['id']}/credit-notes",
            json={"amount": "6.01", "reason": "too much"},
            headers=finance,
        ),
        422,
        "credit_exceeds_invoice",
    )
    resell_after = get(f"/v1/invoices/{inv_resell['id']}")
    assert resell_after["totals"]["balance_due"]["amount"] == "6.00"
    assert [c["number"] for c in resell_after["credit_notes"]] == ["CN-USD-2026-000001"]
    aging = get("/v1/reports/receivables-aging?currency=USD&as_of=2026-05-10")
    assert aging["summary"]["ties"] is True and aging["summary"]["total"] == "6.00"
    assert aging["rows"][0]["bucket"] == "31-60"  # due on receipt, 2026-04-02
    assert get(f"/v1/invoices/{inv_resell['id']}")["overdue"] is True
    # the gateway may not see invoices; finance may not be refused for the close
    problem(client.get("/v1/invoices", headers=gateway), 403, "forbidden")
    tb = get("/v1/reports/trial-balance?currency=USD")
    assert tb["summary"]["balanced"] is True
    # a customer sees its own invoices only; another account's invoice is 404, not 403
    with Session(engine) as s:
        customer_key = create_key(s, role="customer", account_id=acme["id"]).secret
        s.commit()
    own = {"Authorization": f"Bearer {customer_key}"}
    mine = get("/v1/invoices", own)["data"]
    assert [i["account_id"] for i in mine] == [acme["id"]]
    problem(client.get(f"/v1/invoices/{inv_globex['id']}", headers=own), 404, "not_found")
    problem(client.get(f"/v1/invoices/{inv_globex['id']}/pdf", headers=own), 404, "not_found")
    problem(client.get("/v1/reports/trial-balance?currency=USD", headers=own), 403, "forbidden")
    schema = get("/schema/openapi.json", admin)["paths"]
    for path in (
        "/v1/billing-periods/{period}/close",
        "/v1/invoices/{invoice_id}/pdf",
        "/v1/invoices/{invoice_id}/credit-notes",
        "/v1/reports/prepaid-liability",
    ):
        assert path in schema, path


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
