"""The OpenAPI document states what the server does (issue 13, part 4).

The served run of schemathesis against it is tests/e2e/test_openapi_conformance.py.
"""

from __future__ import annotations

import re

import pytest

from invoicing.errors import InvalidPeriod
from invoicing.periods import Period

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def doc(client):
    resp = client.get("/schema/openapi.json")
    assert resp.status_code == 200
    return resp.json()


def operations(doc):
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def test_every_operation_documents_its_problems_as_problem_json(doc):
    assert doc["components"]["schemas"]["Problem"]["required"] == [
        "type",
        "title",
        "status",
        "detail",
        "code",
    ]
    for path, method, op in operations(doc):
        responses = op["responses"]
        for status in ("400", "500", "503"):
            if (path, status) == ("/health", "503"):
                continue  # its own body: HealthOut (below)
            content = responses[status]["content"]
            assert list(content) == ["application/problem+json"], (path, method, status)
            assert content["application/problem+json"]["schema"] == {
                "$ref": "#/components/schemas/Problem"
            }
        public = path in ("/health", "/v1/webhooks/stripe")
        assert ("401" in responses) != public, (path, method)
        assert (op.get("security") == []) == public, (path, method)
        # Litestar's own 400 shape (status_code/detail/extra) is never sent, so never documented
        assert "Validation Exception" not in str(responses), (path, method)
    ops = {(p, m): op for p, m, op in operations(doc)}
    assert "403" in ops[("/v1/models", "post")]["responses"]  # admin only
    assert "403" not in ops[("/v1/accounts/{account_id}", "get")]["responses"]  # every role
    assert "402" in ops[("/v1/accounts/{account_id}/package-purchases", "post")]["responses"]
    assert "422" in ops[("/v1/price-quotes", "get")]["responses"]
    assert "409" in ops[("/v1/api-keys", "post")]["responses"]  # Idempotency-Key reuse


def test_pre_encoded_responses_are_documented_with_their_models(doc):
    def success(path, method, status):
        schema = doc["paths"][path][method]["responses"][status]["content"]["application/json"]
        return schema["schema"]

    assert success("/v1/accounts", "post", "201") == {"$ref": "#/components/schemas/AccountOut"}
    assert success("/v1/accounts/{account_id}/topups", "post", "201") == {
        "$ref": "#/components/schemas/TopupOut"
    }
    assert success("/v1/api-keys/{key_id}/revoke", "post", "200") == {
        "$ref": "#/components/schemas/KeyRevoked"
    }
    for path, method, op in operations(doc):
        for status, response in op["responses"].items():
            for media, content in response.get("content", {}).items():
                if media == "application/json":
                    # a handler answering Response[bytes] states its model:
                    # responses=returns(Model, status) (api/openapi.py)
                    assert content["schema"] != {"type": "string"}, (path, method, status)
    csv = doc["paths"]["/v1/reports/trial-balance"]["get"]["responses"]["200"]["content"]
    assert set(csv) == {"application/json", "text/csv"}


def test_request_bodies_are_as_strict_as_the_server(doc):
    schemas = doc["components"]["schemas"]
    topup = schemas["TopupIn"]
    assert topup["additionalProperties"] is False
    assert re.fullmatch(topup["properties"]["amount"]["pattern"], "12.50")
    assert not re.fullmatch(topup["properties"]["amount"]["pattern"], "١٢")  # ASCII digits only
    auth = schemas["AuthorizationIn"]
    assert [b["title"] for b in auth["oneOf"]] == [
        "single-use hold",
        "multi-capture grant of money",
        "multi-capture grant of package tokens",
    ]
    assert len(schemas["CreditNoteIn"]["oneOf"]) == 2
    assert "anyOf" in schemas["ContractIn"]
    currency = schemas["RateCardIn"]["properties"]["currency"]["pattern"]
    assert re.fullmatch(currency, "USD") and re.fullmatch(currency, "jpy")
    assert not re.fullmatch(currency, "XYZ")
    watermark = doc["paths"]["/v1/rating-watermarks/{currency}"]["get"]["parameters"][0]
    assert watermark["schema"]["pattern"] == currency
    key = next(
        p
        for p in doc["paths"]["/v1/api-keys"]["post"]["parameters"]
        if p["name"] == "Idempotency-Key"
    )
    assert key["schema"]["minLength"] == 1 and key["schema"]["maxLength"] == 255
    model_id = schemas["CatalogModelIn"]["properties"]["id"]["pattern"]
    assert re.fullmatch(model_id, "acme/m-2") and not re.fullmatch(model_id, "m x")


def test_the_request_body_schema_is_what_the_server_validates(admin):
    """A field the document forbids (additionalProperties: false) is refused by the server."""
    resp = admin.post("/v1/accounts", json={"name": "A", "currency": "USD", "color": "red"})
    assert resp.status_code == 400 and resp.json()["code"] == "validation_error"


def test_405_and_options_list_every_method_of_the_path(admin):
    resp = admin.request("TRACE", "/v1/accounts")
    assert resp.status_code == 405
    assert resp.headers["content-type"] == "application/problem+json"
    assert {m.strip() for m in resp.headers["allow"].split(",")} == {"GET", "POST", "OPTIONS"}
    # Litestar's OPTIONS kept the Allow of the first handler registered on a path (POST only)
    resp = admin.options("/v1/accounts")
    assert {m.strip() for m in resp.headers["allow"].split(",")} == {"GET", "POST", "OPTIONS"}
    resp = admin.options("/v1/accounts/acc_x")
    assert {m.strip() for m in resp.headers["allow"].split(",")} == {"GET", "PATCH", "OPTIONS"}


def test_schema_pages_use_only_local_assets(client):
    page = client.get("/schema")
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert assets and all(a.startswith("/schema/assets/") for a in assets), assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    assert client.get("/schema/swagger").status_code == 200


def test_csv_reports_have_one_charset(admin):
    resp = admin.get("/v1/reports/trial-balance", params={"currency": "USD", "format": "csv"})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/csv; charset=utf-8"


def test_health_is_documented_with_its_body(doc):
    health = doc["paths"]["/health"]["get"]
    assert health["security"] == []
    for status in ("200", "503"):
        schema = health["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/HealthOut"}


@pytest.mark.parametrize(
    "value",
    [
        "\uff12\uff10\uff12\uff16-\uff11\uff11",  # fullwidth 2026-11
        "\u0662\u0660\u0662\u0666-\u0661\u0661",  # Arabic-Indic 2026-11
        "2026-1\u0661",
    ],
)
def test_a_period_is_written_in_ascii_digits(value):
    r"""``\d`` matched any script's digits, so fullwidth 2026-11 was the period 2026-11."""
    with pytest.raises(InvalidPeriod):
        Period.parse(value)


def test_query_values_are_never_empty_and_instants_are_rfc_3339(admin, engine):
    """``?period=`` listed every invoice (read as "no filter") while ``?currency=`` was refused.

    A query date-time also read Unix times (``as_of=-3.7e-301`` was 1970) and naive times.
    """
    before = _counts(engine)
    for url, field in [
        ("/v1/invoices?period=", "period"),
        ("/v1/rate-cards?currency=", "currency"),
        ("/v1/reports/trial-balance?currency=USD&as_of=-3.7e-301", "as_of"),
        ("/v1/reports/trial-balance?currency=USD&as_of=0.5", "as_of"),
        ("/v1/reports/trial-balance?currency=USD&as_of=2026-01-01T00:00:00", "as_of"),
        ("/v1/price-quotes?currency=USD&model=m&account_id=a&at=1", "at"),
    ]:
        resp = admin.get(url)
        assert resp.status_code == 400, (url, resp.text)
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.json()["code"] == "validation_error" and resp.json()["field"] == field
    ok = admin.get("/v1/reports/trial-balance?currency=USD&as_of=2026-01-01T00:00:00Z")
    assert ok.status_code == 200
    ok = admin.get("/v1/reports/trial-balance?currency=USD&as_of=2026-01-01T00:00:00%2B02:00")
    assert ok.status_code == 200
    assert _counts(engine) == before


def test_net_terms_days_is_a_number_not_a_boolean(admin):
    """JSON false was accepted as 0 days (Python's False == 0)."""
    account = admin.post("/v1/accounts", json={"name": "A", "currency": "USD"}).json()
    resp = admin.patch(f"/v1/accounts/{account['id']}", json={"billing": {"net_terms_days": False}})
    assert resp.status_code == 400 and resp.json()["code"] == "validation_error"
    resp = admin.patch(f"/v1/accounts/{account['id']}", json={"billing": {"net_terms_days": 30}})
    assert resp.status_code == 200 and resp.json()["billing"]["net_terms_days"] == 30


def test_a_period_has_no_surrounding_whitespace():
    with pytest.raises(InvalidPeriod):
        Period.parse(" 2026-11")
    assert Period.parse("2026-11") == Period(2026, 11)


def _counts(engine) -> dict[str, int]:
    import sqlalchemy as sa

    with engine.connect() as conn:
        return {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("ledger_entries", "idempotency_records", "invoicing_billing_periods")
        }


def test_settle_from_prepaid_is_a_boolean(admin):
    """0 was accepted as false: the lax mode Litestar validates bodies in."""
    account = admin.post("/v1/accounts", json={"name": "A", "currency": "USD"}).json()
    for value in (0, 1, "true"):
        resp = admin.patch(
            f"/v1/accounts/{account['id']}", json={"billing": {"settle_from_prepaid": value}}
        )
        assert resp.status_code == 400 and resp.json()["code"] == "validation_error", value


def test_a_delivery_id_beyond_bigint_is_refused_not_a_server_error(admin):
    """POST /v1/webhook-deliveries/255320020466366643437568/replay answered 500.

    PostgreSQL: bigint out of range.
    """
    resp = admin.post("/v1/webhook-deliveries/255320020466366643437568/replay")
    assert resp.status_code == 400 and resp.json()["code"] == "validation_error"
    resp = admin.get("/v1/webhook-deliveries", params={"starting_after": 10**20})
    assert resp.status_code == 400 and resp.json()["code"] == "validation_error"
    resp = admin.get("/v1/webhook-deliveries", params={"starting_after": -1})
    assert resp.status_code == 400
