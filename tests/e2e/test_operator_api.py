"""The operator's daily edits over HTTP on real PostgreSQL (issue 13, part 5).

Account edits with their audit trail, suspension and closing, API keys checked against real accounts
and the last admin key kept, history lists, the invoice preview of an open month, and the catalog as
customers and resellers read it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from api.auth import ApiKeyAuthMiddleware
from ledger.base import utcnow
from tests.helpers import add_model_m, authorize, key_headers, ok, package, plan, problem

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def cat(admin, engine):
    """One model (USD 3 in / 15 out per Mtok), a package, a plan; returns a gateway key."""
    add_model_m(admin, T0)
    ok(admin.post("/v1/packages", json=package("pk", "Pk", "1.00", 100_000, "m")))
    ok(admin.post("/v1/plans", json=plan("p", "2.00", "wallet", ("monthly", "requests", 5))))
    return key_headers(engine, "gateway")


def account(admin, top_up: str | None = None, **kw):
    acc = ok(admin.post("/v1/accounts", json={"name": "C", "currency": "USD", **kw}))
    if top_up:
        method = "reseller" if kw.get("parent_id") else "bank_transfer"
        ok(
            admin.post(
                f"/v1/accounts/{acc['id']}/topups", json={"amount": top_up, "method": method}
            )
        )
    return acc


def rec(rid, acc, **kw):
    return {
        "id": rid,
        "account_id": acc["id"],
        "model": "m",
        "occurred_at": utcnow().isoformat(),
        "input_tokens": 0,
        "output_tokens": 1000,
        **kw,
    }


def send(client, headers, *records):
    return ok(client.post("/v1/usage", json={"records": list(records)}, headers=headers), 200)[
        "results"
    ]


def audit_events(client, **params):
    return ok(client.get("/v1/audit-events", params=params), 200)["data"]


# -- account edits -------------------------------------------------------------------------


def test_patch_changes_every_setting_and_audits_before_and_after(admin, cat):
    acc = account(admin)
    edit = {
        "name": "Acme Ltd",
        "credit_limit": "100.00",
        "discounts": [{"model": "m", "pct": "20"}],
        "burn_order": ["paid", "bonus", "package", "plan", "overage"],
        "low_balance_threshold": "5.00",
        "billing": {"net_terms_days": 30},
        "reason": "signed contract #42",
    }
    key = {"Idempotency-Key": "edit-1"}
    out = ok(admin.patch(f"/v1/accounts/{acc['id']}", json=edit, headers=key), 200)
    assert out["name"] == "Acme Ltd" and out["status"] == "active"
    assert out["credit_limit"] == {"amount": "100.00", "currency": "USD"}
    assert out["low_balance_threshold"] == {"amount": "5.00", "currency": "USD"}
    assert out["burn_order"][0] == "paid" and out["billing"]["net_terms_days"] == 30
    # the edit is charged at once: 1,000 output tokens at 15/Mtok less 20 %, from the limit
    (r,) = send(admin, cat, rec("e1", acc))
    assert (r["status"], r["billed"]["amount"]) == ("charged", "0.012")

    (event,) = audit_events(admin, target_id=acc["id"], action="account.update")
    assert event["actor_role"] == "admin" and event["request_id"]
    assert event["changes"]["reason"] == "signed contract #42"
    fields = event["changes"]["fields"]
    assert fields["credit_limit"] == {"before": "0.00", "after": "100.00"}
    assert fields["name"] == {"before": "C", "after": "Acme Ltd"}
    assert fields["billing.net_terms_days"]["after"] == 30
    # a replay with the same key answers the same and records nothing more
    again = admin.patch(f"/v1/accounts/{acc['id']}", json=edit, headers=key)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    # setting what is already set changes nothing and records nothing
    ok(admin.patch(f"/v1/accounts/{acc['id']}", json={"name": "Acme Ltd"}), 200)
    assert len(audit_events(admin, target_id=acc["id"], action="account.update")) == 1


def test_bad_patches_are_refused_and_change_nothing(admin, cat, engine):
    acc = account(admin)
    problem(admin.patch(f"/v1/accounts/{acc['id']}", json={}), 400, "validation_error")
    problem(admin.patch(f"/v1/accounts/{acc['id']}", json={"name": None}), 400, "validation_error")
    problem(
        admin.patch(f"/v1/accounts/{acc['id']}", json={"credit_limit": "-5"}),
        400,
        "validation_error",
    )
    body = problem(
        admin.patch(
            f"/v1/accounts/{acc['id']}",
            json={"name": "X", "failed_request_policy": "no-such-policy"},
        ),
        400,
        "validation_error",
    )
    assert "POST /v1/failed-request-policies" in body["detail"]
    problem(
        admin.patch(f"/v1/accounts/{acc['id']}", json={"status": "deleted"}),
        400,
        "validation_error",
    )
    problem(admin.patch("/v1/accounts/acc_missing", json={"name": "X"}), 404, "not_found")
    customer = key_headers(engine, "customer", acc["id"])
    problem(
        admin.patch(f"/v1/accounts/{acc['id']}", json={"name": "X"}, headers=customer),
        403,
        "forbidden",
    )
    assert ok(admin.get(f"/v1/accounts/{acc['id']}"), 200)["name"] == "C"
    assert audit_events(admin, target_id=acc["id"], action="account.update") == []


def test_suspension_declines_authorizations_and_usage_with_a_stable_code(admin, cat):
    acc = account(admin, "10.00")
    grant = ok(
        admin.post(
            "/v1/authorizations",
            json={"account_id": acc["id"], "multi_capture": True, "amount": "1.00"},
            headers=cat,
        )
    )
    ok(admin.patch(f"/v1/accounts/{acc['id']}", json={"status": "suspended"}), 200)

    hold = authorize(admin, cat, acc, 10, 100)
    assert (hold["status"], hold["decline_code"]) == ("declined", "account_suspended")
    more = ok(
        admin.post(
            f"/v1/authorizations/{grant['id']}/increment", json={"amount": "1.00"}, headers=cat
        ),
        200,
    )
    assert (more["decline_code"], more["final"]) == ("account_suspended", True)
    plain, captured = send(admin, cat, rec("s1", acc), rec("s2", acc, authorization_id=grant["id"]))
    assert (plain["status"], plain["reason"]) == ("rejected", "account_suspended")
    assert captured["status"] == "charged"  # made under a grant approved before

    ok(admin.patch(f"/v1/accounts/{acc['id']}", json={"status": "active"}), 200)
    (again,) = send(admin, cat, rec("s1", acc))
    assert again["status"] == "charged"
    changes = [
        e["changes"]["fields"]["status"]
        for e in audit_events(admin, target_id=acc["id"], action="account.update")
    ]
    assert changes == [
        {"before": "active", "after": "suspended"},
        {"before": "suspended", "after": "active"},
    ]


def test_closing_is_refused_while_money_remains_then_final(admin, cat):
    acc = account(admin, "3.00")
    body = problem(
        admin.patch(f"/v1/accounts/{acc['id']}", json={"status": "closed"}),
        409,
        "account_not_empty",
    )
    assert body["remaining"] == ["paid credit"] and "Refund" in body["detail"]
    topup_id = ok(admin.get(f"/v1/accounts/{acc['id']}/topups"), 200)["data"][0]["id"]
    ok(admin.post(f"/v1/topups/{topup_id}/refunds", json={"reason": "leaving"}))
    closed = ok(admin.patch(f"/v1/accounts/{acc['id']}", json={"status": "closed"}), 200)
    assert closed["status"] == "closed"
    problem(
        admin.patch(f"/v1/accounts/{acc['id']}", json={"status": "active"}), 409, "account_closed"
    )
    problem(
        admin.post(
            f"/v1/accounts/{acc['id']}/topups", json={"amount": "1.00", "method": "bank_transfer"}
        ),
        409,
        "account_closed",
    )
    (r,) = send(admin, cat, rec("c1", acc))
    assert (r["status"], r["reason"]) == ("rejected", "account_closed")


# -- API keys ------------------------------------------------------------------------------


def test_keys_are_checked_against_real_accounts(admin, cat, engine):
    acc = account(admin)
    body = problem(
        admin.post("/v1/api-keys", json={"role": "customer", "account_id": "acc_nope"}),
        422,
        "unknown_account",
    )
    assert "acc_nope" in body["detail"]
    problem(
        admin.post("/v1/api-keys", json={"role": "reseller", "account_id": acc["id"]}),
        400,
        "validation_error",
    )
    problem(
        admin.post("/v1/api-keys", json={"role": "finance", "account_id": acc["id"]}),
        400,
        "validation_error",
    )
    created = ok(admin.post("/v1/api-keys", json={"role": "customer", "account_id": acc["id"]}))
    assert created["account_id"] == acc["id"]
    with Session(engine) as s:
        assert s.scalar(sa.text("SELECT count(*) FROM api_keys WHERE account_id = 'acc_nope'")) == 0


def test_the_last_admin_key_cannot_be_revoked(admin, engine):
    me = ok(admin.get("/v1/api-keys"), 200)["data"][0]
    body = problem(admin.post(f"/v1/api-keys/{me['id']}/revoke"), 409, "last_admin_key")
    assert "create another admin key first" in body["detail"]
    other = ok(admin.post("/v1/api-keys", json={"role": "admin"}))
    ok(admin.post(f"/v1/api-keys/{me['id']}/revoke"), 200)
    ApiKeyAuthMiddleware._cache.clear()
    problem(admin.get("/v1/api-keys"), 401, "unauthorized")
    second = {"Authorization": f"Bearer {other['key']}"}
    problem(admin.post(f"/v1/api-keys/{other['id']}/revoke", headers=second), 409, "last_admin_key")
    (event,) = ok(
        admin.get("/v1/audit-events", params={"target_id": me["id"]}, headers=second), 200
    )["data"]
    assert event["action"].startswith("POST /v1/api-keys/") and event["action"].endswith("revoke")
    assert event["actor"] == me["id"]  # the key revoked itself


# -- history -------------------------------------------------------------------------------


def page_the_topups(admin, acc) -> None:
    """Three top-ups, paged two at a time and filtered by time (an aware instant only)."""
    for amount in ("1.00", "2.00", "3.00"):
        ok(
            admin.post(
                f"/v1/accounts/{acc['id']}/topups",
                json={"amount": amount, "method": "bank_transfer"},
            )
        )
    first = ok(admin.get(f"/v1/accounts/{acc['id']}/topups", params={"limit": 2}), 200)
    assert [t["amount"]["amount"] for t in first["data"]] == ["1.00", "2.00"] and first["has_more"]
    rest = ok(
        admin.get(
            f"/v1/accounts/{acc['id']}/topups",
            params={"limit": 2, "starting_after": first["data"][-1]["id"]},
        ),
        200,
    )
    assert [t["amount"]["amount"] for t in rest["data"]] == ["3.00"] and not rest["has_more"]
    later = (utcnow() + timedelta(minutes=1)).isoformat()
    assert (
        ok(admin.get(f"/v1/accounts/{acc['id']}/topups", params={"from": later}), 200)["data"] == []
    )
    problem(
        admin.get(f"/v1/accounts/{acc['id']}/topups", params={"from": "2026-01-01T00:00:00"}),
        400,
        "validation_error",
    )


def list_the_subscriptions(admin, acc) -> None:
    """A subscription to plan p, listed and filtered by status."""
    ok(admin.post(f"/v1/accounts/{acc['id']}/subscriptions", json={"plan_id": "p"}))
    subs = ok(admin.get(f"/v1/accounts/{acc['id']}/subscriptions"), 200)["data"]
    assert [(s["plan_id"], s["status"]) for s in subs] == [("p", "active")]
    assert (
        ok(
            admin.get(f"/v1/accounts/{acc['id']}/subscriptions", params={"status": "canceled"}), 200
        )["data"]
        == []
    )


def page_the_usage_records(admin, cat, acc) -> None:
    """Three usage records paged two at a time; an unknown cursor is refused."""
    send(admin, cat, *[rec(f"u{i}", acc, output_tokens=1000 * (i + 1)) for i in range(3)])
    page = ok(admin.get(f"/v1/accounts/{acc['id']}/usage-records", params={"limit": 2}), 200)
    assert [r["id"] for r in page["data"]] == ["u0", "u1"] and page["has_more"]
    # the plan's quota covered the first requests: what paid is in ``drawn``
    assert page["data"][0]["drawn"] == {"plan_requests": 1, "plan_tokens": 1000}
    nxt = ok(
        admin.get(
            f"/v1/accounts/{acc['id']}/usage-records",
            params={"limit": 2, "starting_after": "u1"},
        ),
        200,
    )
    assert [r["id"] for r in nxt["data"]] == ["u2"] and not nxt["has_more"]
    problem(
        admin.get(f"/v1/accounts/{acc['id']}/usage-records", params={"starting_after": "zz"}),
        422,
        "unknown_cursor",
    )


def list_the_ledger_movements(admin, acc) -> None:
    """The prepaid ledger account's movements: three top-ups in, the plan fee out."""
    lines = ok(
        admin.get(
            f"/v1/accounts/{acc['id']}/ledger-movements",
            params={"ledger_account": "customer:prepaid"},
        ),
        200,
    )["data"]
    # three top-ups in, the plan fee out
    assert [(ln["change"], ln["ledger_account"]) for ln in lines] == [
        ("1.00", "customer:prepaid"),
        ("2.00", "customer:prepaid"),
        ("3.00", "customer:prepaid"),
        ("-2.00", "customer:prepaid"),
    ]
    assert lines[0]["credit"] == "1.00" and lines[0]["debit"] == "0.00"
    problem(
        admin.get(f"/v1/accounts/{acc['id']}/ledger-movements", params={"ledger_account": "cash"}),
        400,
        "validation_error",
    )


def test_topups_subscriptions_usage_and_statement_are_paged_and_filtered(admin, cat, engine):
    """One account's lists paged and filtered in turn, then read by its customer.

    The steps build one history: the statement holds the top-ups and the plan's fee.
    """
    acc = account(admin)
    page_the_topups(admin, acc)
    list_the_subscriptions(admin, acc)
    page_the_usage_records(admin, cat, acc)
    list_the_ledger_movements(admin, acc)
    # a customer sees its own history and nobody else's
    own = key_headers(engine, "customer", acc["id"])
    other = account(admin)
    assert ok(admin.get(f"/v1/accounts/{acc['id']}/ledger-movements", headers=own), 200)["data"]
    problem(admin.get(f"/v1/accounts/{other['id']}/topups", headers=own), 404, "not_found")
    problem(admin.get(f"/v1/accounts/{other['id']}/usage-records", headers=own), 404, "not_found")


def test_invoice_preview_of_the_open_month_stores_nothing(admin, cat, engine):
    acc = account(admin, credit_limit="50.00")
    send(admin, cat, rec("p1", acc, output_tokens=100_000), rec("p2", acc, output_tokens=100_000))
    with Session(engine) as s:
        entries = s.scalar(sa.text("SELECT count(*) FROM ledger_entries"))
    pv = ok(admin.get(f"/v1/accounts/{acc['id']}/invoice-preview"), 200)
    assert pv["status"] == "preview" and pv["number"] is None
    assert pv["period"] == utcnow().strftime("%Y-%m")
    (line,) = pv["lines"]
    assert (line["kind"], line["requests"], line["amount"]["amount"]) == ("overage", 2, "3.00")
    assert pv["totals"]["amount_due"] == {"amount": "3.00", "currency": "USD"}
    with Session(engine) as s:
        assert s.scalar(sa.text("SELECT count(*) FROM invoicing_invoices")) == 0
        assert s.scalar(sa.text("SELECT count(*) FROM ledger_entries")) == entries
    # the customer previews its own; a sub-account is not billed (its reseller is)
    own = key_headers(engine, "customer", acc["id"])
    assert ok(admin.get(f"/v1/accounts/{acc['id']}/invoice-preview", headers=own), 200)["lines"]
    reseller = account(admin, kind="reseller")
    sub = account(admin, parent_id=reseller["id"])
    problem(admin.get(f"/v1/accounts/{sub['id']}/invoice-preview"), 400, "validation_error")
    future = (utcnow() + timedelta(days=40)).strftime("%Y-%m")
    problem(
        admin.get(f"/v1/accounts/{acc['id']}/invoice-preview", params={"period": future}),
        400,
        "invalid_period",
    )


# -- catalog read access -------------------------------------------------------------------


def open_the_roles(admin, engine) -> dict[str, dict]:
    """A reseller (50 % markup) with a sub-account, a direct customer (10 % off m), their keys."""
    reseller = account(admin, "100.00", kind="reseller")
    ok(
        admin.post(
            "/v1/reseller-price-books",
            json={
                "reseller_account_id": reseller["id"],
                "currency": "USD",
                "effective_from": T0.isoformat(),
                "markup_pct": "50",
            },
        )
    )
    sub = account(admin, parent_id=reseller["id"])
    direct = account(admin, discounts=[{"model": "m", "pct": "10"}])
    customer = key_headers(engine, "customer", direct["id"])
    sub_customer = key_headers(engine, "customer", sub["id"])
    reseller_key = key_headers(engine, "reseller", reseller["id"])
    return {
        "reseller": reseller,
        "sub": sub,
        "direct": direct,
        "customer": customer,
        "sub_customer": sub_customer,
        "reseller_key": reseller_key,
    }


def read_and_write_the_catalog(admin, customer: dict, reseller_key: dict) -> None:
    """Customers and resellers read the catalog (resellers the rate cards too), never write it."""
    for path in ("/v1/models", "/v1/packages", "/v1/plans"):
        assert ok(admin.get(path, headers=customer), 200)["data"]
    problem(admin.get("/v1/rate-cards", headers=customer), 403, "forbidden")
    assert ok(admin.get("/v1/rate-cards", headers=reseller_key), 200)["data"]
    # reading is open to them, writing the catalog stays with admins, dry runs included
    problem(admin.post("/v1/rate-cards/preview", json={}, headers=reseller_key), 403, "forbidden")
    problem(admin.post("/v1/packages", json={}, headers=customer), 403, "forbidden")
    problem(
        admin.post(
            "/v1/models",
            json={"id": "x", "provider": "p", "display_name": "X"},
            headers=reseller_key,
        ),
        403,
        "forbidden",
    )


def read_the_prices(admin, r: dict) -> None:
    """Each customer reads its own prices only: the direct one discounted, the sub's retail."""
    direct, sub, customer = r["direct"], r["sub"], r["customer"]
    (mine,) = ok(admin.get(f"/v1/accounts/{direct['id']}/prices", headers=customer), 200)
    assert (mine["model"], mine["prices"]["output_per_mtok"]) == ("m", "13.50")
    (retail,) = ok(admin.get(f"/v1/accounts/{sub['id']}/prices", headers=r["sub_customer"]), 200)
    assert retail["prices"]["output_per_mtok"] == "22.50" and retail["wholesale"] is None
    problem(admin.get(f"/v1/accounts/{sub['id']}/prices", headers=customer), 404, "not_found")


def quote_by_role(admin, r: dict) -> None:
    """Quotes: a customer's own, a reseller's for its present and future sub-accounts only."""
    direct, sub, customer = r["direct"], r["sub"], r["customer"]
    reseller, reseller_key = r["reseller"], r["reseller_key"]
    q = {"currency": "USD", "model": "m"}
    own = ok(
        admin.get("/v1/price-quotes", params={**q, "account_id": direct["id"]}, headers=customer),
        200,
    )
    assert own["source"] == "contract" and own["wholesale"] is None
    problem(
        admin.get("/v1/price-quotes", params={**q, "account_id": sub["id"]}, headers=customer),
        404,
        "not_found",
    )
    # a reseller quotes its sub-accounts with its own wholesale price, and future ones
    quote = ok(
        admin.get("/v1/price-quotes", params={**q, "account_id": sub["id"]}, headers=reseller_key),
        200,
    )
    assert quote["source"] == "reseller_retail"
    assert quote["wholesale"]["prices"]["output_per_mtok"] == "15.00"
    future = ok(
        admin.get(
            "/v1/price-quotes",
            params={**q, "account_id": "acc_future", "reseller_account_id": reseller["id"]},
            headers=reseller_key,
        ),
        200,
    )
    assert future["prices"]["output_per_mtok"] == "22.50"
    # not another account's prices, even named as a future sub-account
    problem(
        admin.get(
            "/v1/price-quotes",
            params={**q, "account_id": direct["id"], "reseller_account_id": reseller["id"]},
            headers=reseller_key,
        ),
        404,
        "not_found",
    )
    # a quote in another currency than the account's is well-formed but cannot be given
    problem(
        admin.get("/v1/price-quotes", params={**q, "currency": "EUR", "account_id": direct["id"]}),
        422,
        "currency_mismatch",
    )


def test_customers_and_resellers_read_the_catalog_and_their_prices(admin, cat, engine):
    """One catalog read by each role in turn (the roles see the same objects differently)."""
    roles = open_the_roles(admin, engine)
    read_and_write_the_catalog(admin, roles["customer"], roles["reseller_key"])
    read_the_prices(admin, roles)
    quote_by_role(admin, roles)
