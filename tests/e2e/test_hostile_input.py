"""Hostile input over HTTP.

Control characters, numbers beyond storage, non-ASCII digits, empty ids and deep JSON get a 4xx
problem+json with a stable code and change nothing.
"""

from __future__ import annotations

import json

import pytest

from api.boundary import MAX_JSON_DEPTH
from tests.helpers import account, balance, ok, problem, rec, send


def accounts_count(admin) -> int:
    return len(ok(admin.get("/v1/accounts", params={"limit": 100}), 200)["data"])


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x7f", "\x85"])
def test_control_characters_in_a_body_are_refused_and_change_nothing(admin, char):
    before = accounts_count(admin)
    body = problem(
        admin.post("/v1/accounts", json={"name": f"a{char}b", "currency": "USD"}),
        400,
        "invalid_characters",
    )
    assert "body.name" in body["detail"]
    assert accounts_count(admin) == before


def test_tabs_and_newlines_in_free_text_are_kept(admin):
    acc = ok(admin.post("/v1/accounts", json={"name": "line one\n\tline two", "currency": "USD"}))
    assert acc["name"] == "line one\n\tline two"


def test_a_nul_in_a_json_key_is_refused(admin):
    problem(
        admin.post("/v1/accounts", json={"name": "n", "currency": "USD", "x\x00": 1}),
        400,
        "invalid_characters",
    )


def test_control_characters_in_the_path_and_query_are_refused(admin):
    problem(admin.get("/v1/accounts/acc%00x"), 400, "invalid_characters")
    problem(admin.get("/v1/accounts/acc%00x/balance"), 400, "invalid_characters")
    problem(admin.get("/v1/accounts", params={"starting_after": "a\x00"}), 400)
    problem(admin.get("/v1/accounts?starting_after=%1b"), 400, "invalid_characters")


def test_a_record_with_a_nul_is_rejected_alone(admin, gw):
    acc = account(admin, "10.00")
    good, bad_id, bad_tag = send(
        admin,
        gw,
        rec("ok", acc),
        rec("bad\x00", acc, model="m\x00"),
        rec("tagged", acc, tags={"team": "x\x00y"}),
    )
    assert good["status"] == "charged"
    assert (bad_id["id"], bad_id["status"], bad_id["reason"]) == (
        "#1",
        "rejected",
        "invalid_characters",
    )
    assert (bad_tag["status"], bad_tag["reason"]) == ("rejected", "invalid_characters")
    assert "records[2].tags.team" in bad_tag["detail"]
    # only the clean record was charged: 1,000 in + 1,000 out at 3/15 per Mtok = 0.018
    assert balance(admin, acc)["paid"] == "9.982"


def test_an_admin_batch_with_a_nul_is_audited_without_it(admin, gw):
    # an admin's usage batch is audited with its body; a NUL in a rejected record must not
    # turn the whole batch into a 500 when the audit is written
    acc = account(admin, "10.00")
    records = [rec("ok", acc), rec("bad", acc, litellm_payload={"k\x00": ["\x00", "a"]})]
    resp = admin.post("/v1/usage", json={"records": records}, headers={"Idempotency-Key": "b1"})
    results = ok(resp, 200)["results"]
    assert [r["status"] for r in results] == ["charged", "rejected"]
    events = ok(admin.get("/v1/audit-events", params={"action": "POST /v1/usage"}), 200)["data"]
    stored = events[0]["changes"]["request"]["records"][1]["litellm_payload"]
    assert stored == {"k\ufffd": ["\ufffd", "a"]}


def test_an_admin_batch_without_a_key_is_audited_and_a_gateway_batch_is_not(admin, gw):
    acc = account(admin, "10.00")
    mine = ok(admin.post("/v1/usage", json={"records": [rec("adm-1", acc)]}), 200)
    assert [r["status"] for r in mine["results"]] == ["charged"]
    assert [r["status"] for r in send(admin, gw, rec("gw-1", acc))] == ["charged"]
    events = ok(admin.get("/v1/audit-events", params={"action": "POST /v1/usage"}), 200)["data"]
    audited = [e["changes"]["request"]["records"][0]["id"] for e in events]
    assert audited == ["adm-1"]


def test_a_nul_inside_a_provider_usage_object_rejects_its_record_alone(admin, gw):
    acc = account(admin, "10.00")
    clean = rec("ok", acc)
    dirty = rec("dirty", acc)
    for k in ("input_tokens", "output_tokens"):
        dirty.pop(k)
    dirty["openai_usage"] = {"prompt_tokens": 1, "completion_tokens": 1, "note": "\x00"}
    a, b = send(admin, gw, clean, dirty)
    assert (a["status"], b["status"], b["reason"]) == ("charged", "rejected", "invalid_characters")


@pytest.mark.parametrize(
    "amount",
    [
        "1" + "0" * 20,  # beyond the ledger's columns
        "1000000000000000",  # a quadrillion: the first amount refused
        "\u0661\u0660\u0660",  # Arabic-Indic digits
        "\uff11\uff10\uff10",  # full-width digits
        "1_000",
        " 100",
        "1e3",
    ],
)
def test_money_beyond_storage_or_not_in_ascii_digits_is_refused(admin, amount):
    acc = account(admin)
    problem(
        admin.post(
            f"/v1/accounts/{acc['id']}/topups", json={"amount": amount, "method": "bank_transfer"}
        ),
        400,
    )
    assert balance(admin, acc)["paid"] == "0.00"


def test_the_largest_accepted_amount_is_credited_exactly(admin):
    acc = account(admin)
    ok(
        admin.post(
            f"/v1/accounts/{acc['id']}/topups",
            json={"amount": "999999999999999.99", "method": "bank_transfer"},
        )
    )
    assert balance(admin, acc)["paid"] == "999999999999999.99"


@pytest.mark.parametrize(
    ("field", "value"),
    [("tokens", 2**63), ("tokens", 10**15 + 1), ("valid_days", 10**9), ("tokens", 0)],
)
def test_package_counts_beyond_storage_are_refused(admin, field, value):
    body = {
        "id": "pk",
        "name": "P",
        "currency": "USD",
        "price": "1.00",
        "tokens": 1000,
        "valid_days": 30,
        field: value,
    }
    problem(admin.post("/v1/packages", json=body), 400, "validation_error")
    assert ok(admin.get("/v1/packages"), 200)["data"] == []


def test_prices_beyond_storage_are_refused(admin):
    ok(admin.post("/v1/models", json={"id": "m", "provider": "p", "display_name": "M"}))
    price = {"model": "m", "input_per_mtok": "1" + "0" * 20, "output_per_mtok": "1"}
    resp = admin.post(
        "/v1/rate-cards",
        json={"currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "prices": [price]},
    )
    problem(resp, resp.status_code)
    assert 400 <= resp.status_code < 500


def test_an_empty_tax_profile_id_is_refused(admin):
    acc = account(admin)
    problem(admin.patch(f"/v1/accounts/{acc['id']}", json={"billing": {"tax_profile": ""}}), 400)


def test_an_unknown_tax_profile_is_not_found(admin):
    acc = account(admin)
    resp = admin.patch(f"/v1/accounts/{acc['id']}", json={"billing": {"tax_profile": "nope"}})
    assert 400 <= resp.status_code < 500, resp.text


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5000, 100_000])
def test_deeply_nested_json_is_refused(admin, depth):
    before = accounts_count(admin)
    body = '{"name": "n", "currency": "USD", "x": ' + nested(depth) + "}"
    problem(
        admin.post("/v1/accounts", content=body, headers={"content-type": "application/json"}),
        400,
        "json_too_deep",
    )
    assert accounts_count(admin) == before


@pytest.mark.parametrize("depth", [50, 5000])
def test_deeply_nested_usage_is_refused_without_a_500(admin, gw, depth):
    acc = account(admin, "1.00")
    record = json.dumps(rec("deep", acc))[:-1] + ', "openai_usage": ' + nested(depth) + "}"
    resp = admin.post(
        "/v1/usage",
        content='{"records": [' + record + "]}",
        headers={**gw, "content-type": "application/json"},
    )
    if resp.status_code == 200:
        (result,) = resp.json()["results"]
        assert (result["status"], result["reason"]) == ("rejected", "json_too_deep")
    else:
        problem(resp, 400, "json_too_deep")
    assert balance(admin, acc)["paid"] == "1.00"


def test_a_negative_low_balance_threshold_is_refused_when_the_account_is_created(admin):
    before = accounts_count(admin)
    body = problem(
        admin.post(
            "/v1/accounts", json={"name": "n", "currency": "USD", "low_balance_threshold": "-5"}
        ),
        400,
        "validation_error",
    )
    assert "low_balance_threshold" in body["detail"]
    assert accounts_count(admin) == before
