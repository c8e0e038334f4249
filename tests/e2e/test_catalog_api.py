"""The catalog through the HTTP API on real PostgreSQL.

Every endpoint, bad input as problem+json that changes nothing, idempotent replays, and admin-only
access.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from api.auth import create_key
from ledger.base import Base
from ledger.units import currency
from plans import catalog
from tests.helpers import ok, plan, problem

CATALOG_TABLES = sorted(
    t for t in Base.metadata.tables if t.startswith("catalog_") or t == "rating_watermarks"
)
JAN = "2026-01-01T00:00:00Z"
MAR = "2026-03-01T00:00:00+00:00"
LARGE = {"model": "m-large", "input_per_mtok": "3.00", "output_per_mtok": "15.00"}


def row_counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.scalar(sa.text(f"SELECT count(*) FROM {t}")) for t in CATALOG_TABLES}


@pytest.fixture
def cat(admin):
    for model_id in ("m-large", "m-small"):
        ok(
            admin.post(
                "/v1/models",
                json={"id": model_id, "provider": "acme", "display_name": model_id.upper()},
            )
        )
    return admin


def new_reseller(client):
    body = {"name": "R", "currency": "USD", "kind": "reseller"}
    return ok(client.post("/v1/accounts", json=body))


def test_models(cat):
    slash = ok(
        cat.post(
            "/v1/models",
            json={"id": "acme/m-2", "provider": "acme", "display_name": "Acme 2"},
        )
    )
    assert ok(cat.get("/v1/models/acme/m-2"), 200) == slash
    page = ok(cat.get("/v1/models", params={"limit": 2}), 200)
    assert [m["id"] for m in page["data"]] == ["acme/m-2", "m-large"] and page["has_more"]
    page = ok(cat.get("/v1/models", params={"starting_after": "m-large"}), 200)
    assert [m["id"] for m in page["data"]] == ["m-small"] and not page["has_more"]
    problem(cat.get("/v1/models/m-nope"), 404, "not_found")
    problem(
        cat.post("/v1/models", json={"id": "m-large", "provider": "x", "display_name": "y"}),
        409,
        "conflict",
    )
    problem(
        cat.post("/v1/models", json={"id": "m x", "provider": "x", "display_name": "y"}),
        400,
        "validation_error",
    )


def test_rate_cards_store_resolved_prices_as_strings(cat, engine):
    card = ok(
        cat.post(
            "/v1/rate-cards",
            json={"currency": "USD", "effective_from": JAN, "prices": [LARGE]},
        )
    )
    assert card["id"].startswith("rc_") and card["effective_from"] == JAN
    assert card["prices"] == [
        {
            "model": "m-large",
            "input_per_mtok": "3.00",
            "output_per_mtok": "15.00",
            "cache_read_per_mtok": "0.30",
            "cache_write_5m_per_mtok": "3.75",
            "cache_write_30m_per_mtok": "3.75",
            "cache_write_1h_per_mtok": "6.00",
            "cache_write_12h_per_mtok": "6.00",
            "reasoning_per_mtok": "15.00",
            "input_audio_per_mtok": "3.00",
            "input_image_per_mtok": "3.00",
            "output_audio_per_mtok": "15.00",
            "output_image_per_mtok": "15.00",
            "batch_discount_pct": "50",
            "request_fees": {},
            "service_tiers": {},
            "context_tiers": [],
        }
    ]
    assert ok(cat.get(f"/v1/rate-cards/{card['id']}"), 200) == card
    ok(
        cat.post(
            "/v1/rate-cards", json={"currency": "EUR", "effective_from": JAN, "prices": [LARGE]}
        )
    )
    listed = ok(cat.get("/v1/rate-cards", params={"currency": "USD"}), 200)
    assert [c["id"] for c in listed["data"]] == [card["id"]]
    problem(cat.get("/v1/rate-cards/rc_nope"), 404, "not_found")
    problem(cat.get("/v1/rate-cards", params={"currency": "XYZ"}), 400, "unknown_currency")

    before = row_counts(engine)
    bad = [
        ({"currency": "XYZ"}, 400, "unknown_currency"),
        ({"prices": [{**LARGE, "model": "m-nope"}]}, 422, "unknown_model"),
        ({"prices": [{**LARGE, "input_per_mtok": "-3"}]}, 400, "invalid_price"),
        ({"prices": [{**LARGE, "input_per_mtok": 3}]}, 400, "validation_error"),  # a JSON number
        ({"prices": [{**LARGE, "cache_read_per_mtok": "0.0000001"}]}, 400, "invalid_price"),
        ({"prices": [LARGE, LARGE]}, 400, "validation_error"),
        ({"prices": []}, 400, "validation_error"),
        ({"effective_from": "2026-01-01T00:00:00"}, 400, "validation_error"),  # no offset
        ({"prices": [{**LARGE, "vat": "1"}]}, 400, "validation_error"),
        ({}, 409, "conflict"),  # a USD card already takes effect at JAN
    ]
    for change, status, code in bad:
        body = {"currency": "USD", "effective_from": JAN, "prices": [LARGE], **change}
        problem(cat.post("/v1/rate-cards", json=body), status, code)
    assert row_counts(engine) == before


def test_backdated_card_is_refused_after_usage_was_priced(cat, engine):
    ok(
        cat.post(
            "/v1/rate-cards", json={"currency": "USD", "effective_from": JAN, "prices": [LARGE]}
        )
    )
    assert ok(cat.get("/v1/rating-watermarks/USD"), 200)["priced_through_at"] is None
    with Session(engine) as s:  # what the usage path does when it prices a batch
        catalog.advance_priced_through(s, currency("USD"), datetime(2026, 6, 1, tzinfo=UTC))
        s.commit()
    mark = ok(cat.get("/v1/rating-watermarks/USD"), 200)["priced_through_at"]
    assert mark == "2026-06-01T00:00:00Z"
    before = row_counts(engine)
    body = problem(
        cat.post(
            "/v1/rate-cards", json={"currency": "USD", "effective_from": MAR, "prices": [LARGE]}
        ),
        409,
        "backdated_price_change",
    )
    assert "already priced through" in body["detail"] and body["priced_through_at"]
    assert row_counts(engine) == before
    later = {"currency": "USD", "effective_from": "2026-06-01T00:00:01Z", "prices": [LARGE]}
    ok(cat.post("/v1/rate-cards", json=later))


def open_reseller_tree(cat) -> tuple[dict, dict, dict]:
    """A reseller R with a sub-account S, and a plain customer P: (reseller, sub, plain)."""
    reseller = ok(
        cat.post("/v1/accounts", json={"name": "R", "currency": "USD", "kind": "reseller"})
    )
    sub = ok(
        cat.post("/v1/accounts", json={"name": "S", "currency": "USD", "parent_id": reseller["id"]})
    )
    plain = ok(cat.post("/v1/accounts", json={"name": "P", "currency": "USD"}))
    return reseller, sub, plain


def sign_contract(cat, reseller: dict) -> None:
    """The reseller's contract: 20 % off everything, 50 % off m-large; read back and listed."""
    contract = ok(
        cat.post(
            "/v1/contracts",
            json={
                "account_id": reseller["id"],
                "currency": "USD",
                "starts_at": JAN,
                "discounts": [{"pct": "20"}, {"model": "m-large", "pct": "50"}],
            },
        )
    )
    assert contract["version"] == 1 and contract["discounts"] == [
        {"model": None, "pct": "20"},
        {"model": "m-large", "pct": "50"},
    ]
    assert ok(cat.get(f"/v1/contracts/{contract['id']}"), 200) == contract
    assert ok(cat.get("/v1/contracts", params={"account_id": reseller["id"]}), 200)["data"] == [
        contract
    ]


def open_price_book(cat, reseller: dict) -> dict:
    """The reseller's price book: 40 % over its wholesale price; read back and listed."""
    book = ok(
        cat.post(
            "/v1/reseller-price-books",
            json={
                "reseller_account_id": reseller["id"],
                "currency": "USD",
                "markup_pct": "40",
                "effective_from": JAN,
            },
        )
    )
    assert book["markup_pct"] == "40" and book["prices"] == []
    assert ok(cat.get(f"/v1/reseller-price-books/{book['id']}"), 200) == book
    listed = ok(
        cat.get("/v1/reseller-price-books", params={"reseller_account_id": reseller["id"]}), 200
    )
    assert listed["data"] == [book]
    return book


def check_the_sub_accounts_quote(cat, sub: dict, reseller: dict, book: dict, card: dict) -> None:
    """The sub-account's quote: the book's retail price over the contract's wholesale price."""
    quote = ok(
        cat.get(
            "/v1/price-quotes",
            params={
                "account_id": sub["id"],
                "reseller_account_id": reseller["id"],
                "currency": "USD",
                "model": "m-large",
                "at": MAR,
            },
        ),
        200,
    )
    assert (quote["source"], quote["source_id"], quote["markup_pct"]) == (
        "reseller_retail",
        book["id"],
        "40",
    )
    assert quote["prices"]["input_per_mtok"] == "2.10"  # 3.00 -50 % +40 %
    assert quote["wholesale"]["source"] == "contract"
    assert quote["wholesale"]["prices"]["input_per_mtok"] == "1.50"
    assert quote["wholesale"]["card_id"] == card["id"]


def refuse_bad_contracts_books_and_quotes(cat, reseller: dict, plain: dict) -> None:
    """Unknown cards and accounts, missing terms, wrong currencies and kinds, no rate in force."""
    problem(
        cat.post(
            "/v1/contracts",
            json={"account_id": plain["id"], "currency": "USD", "rate_card_id": "rc_x"},
        ),
        404,
        "not_found",
    )
    problem(
        cat.post("/v1/contracts", json={"account_id": plain["id"], "currency": "USD"}),
        400,
        "validation_error",
    )
    problem(  # contracts, price books and bonus rules name real accounts of the right kind
        cat.post("/v1/contracts", json={"account_id": "acc_nope", "currency": "USD"}),
        404,
        "not_found",
    )
    problem(
        cat.post("/v1/contracts", json={"account_id": plain["id"], "currency": "EUR"}),
        400,
        "validation_error",
    )
    books = "/v1/reseller-price-books"
    problem(
        cat.post(
            books, json={"reseller_account_id": plain["id"], "currency": "USD", "markup_pct": "10"}
        ),
        400,
        "validation_error",
    )
    problem(
        cat.post(
            books,
            json={"reseller_account_id": reseller["id"], "currency": "USD", "markup_pct": "-1"},
        ),
        400,
        "invalid_price",
    )
    problem(cat.get("/v1/contracts/ct_nope"), 404, "not_found")
    too_early = {
        "account_id": "a",
        "currency": "USD",
        "model": "m-large",
        "at": "2025-01-01T00:00:00Z",
    }
    problem(cat.get("/v1/price-quotes", params=too_early), 422, "no_rate_in_force")


def test_contracts_reseller_books_and_price_quotes(cat):
    """Contracts and a reseller's price book, then quotes that read them in precedence order.

    One story in named steps, as each quote depends on what the steps before created.
    """
    reseller, sub, plain = open_reseller_tree(cat)
    card = ok(
        cat.post(
            "/v1/rate-cards", json={"currency": "USD", "effective_from": JAN, "prices": [LARGE]}
        )
    )
    sign_contract(cat, reseller)
    book = open_price_book(cat, reseller)
    check_the_sub_accounts_quote(cat, sub, reseller, book, card)
    refuse_bad_contracts_books_and_quotes(cat, reseller, plain)


def test_packages(cat, engine):
    body = {
        "id": "pk-1m",
        "name": "1M tokens",
        "currency": "USD",
        "price": "9.00",
        "tokens": 1_000_000,
        "models": ["m-large"],
        "valid_days": 30,
    }
    created = ok(cat.post("/v1/packages", json=body))
    assert created == {**body, "currency": "USD"}
    assert ok(cat.get("/v1/packages/pk-1m"), 200) == created
    assert ok(cat.get("/v1/packages"), 200) == {"data": [created], "has_more": False}
    before = row_counts(engine)
    zero = problem(
        cat.post("/v1/packages", json={**body, "id": "pk-0", "tokens": 0}), 400, "validation_error"
    )
    assert "tokens: Input should be greater than or equal to 1" in zero["detail"]
    problem(
        cat.post("/v1/packages", json={**body, "id": "pk-2", "price": 9}), 400, "validation_error"
    )
    problem(
        cat.post("/v1/packages", json={**body, "id": "pk-2", "price": "9.001"}),
        400,
        "invalid_amount",
    )
    problem(
        cat.post("/v1/packages", json={**body, "id": "pk-2", "models": ["m-x"]}),
        422,
        "unknown_model",
    )
    problem(
        cat.post("/v1/packages", json={**body, "id": "pk-2", "valid_days": 0}),
        400,
        "validation_error",
    )
    problem(cat.post("/v1/packages", json=body), 409, "conflict")
    assert row_counts(engine) == before
    problem(cat.get("/v1/packages/pk-2"), 404, "not_found")


def test_plans(cat, engine):
    windows = (("rolling_5h", "requests", 40), ("weekly", "tokens", 5_000_000))
    body = plan("coder", "20.00", "block", *windows)
    created = ok(cat.post("/v1/plans", json=body))
    assert created == {**body, "models": []}
    assert ok(cat.get("/v1/plans/coder"), 200) == created
    assert [p["id"] for p in ok(cat.get("/v1/plans"), 200)["data"]] == ["coder"]
    before = row_counts(engine)
    twice = [{"kind": "weekly", "unit": "tokens", "limit": n} for n in (1, 2)]
    overlap = problem(
        cat.post("/v1/plans", json={**body, "id": "p2", "windows": twice}), 400, "validation_error"
    )
    assert "both weekly windows on tokens" in overlap["detail"]
    problem(
        cat.post("/v1/plans", json={**body, "id": "p2", "windows": []}), 400, "validation_error"
    )
    problem(
        cat.post("/v1/plans", json={**body, "id": "p2", "on_exhausted": "x"}),
        400,
        "validation_error",
    )
    problem(cat.post("/v1/plans", json=body), 409, "conflict")
    assert row_counts(engine) == before
    problem(cat.get("/v1/plans/p2"), 404, "not_found")


TIERS = [
    {"min_amount": "100.00", "bonus_pct": "5"},
    {"min_amount": "1000.00", "bonus_amount": "150.00", "bonus_expires_days": 90},
]


def create_the_operators_rule(cat) -> dict:
    """The operator's rule of TIERS from January, every tier field answered."""
    rule = ok(
        cat.post(
            "/v1/topup-bonus-rules", json={"currency": "USD", "tiers": TIERS, "effective_from": JAN}
        )
    )
    assert rule["tiers"] == [
        {
            "min_amount": "100.00",
            "bonus_pct": "5",
            "bonus_amount": None,
            "bonus_expires_days": None,
        },
        {
            "min_amount": "1000.00",
            "bonus_pct": None,
            "bonus_amount": "150.00",
            "bonus_expires_days": 90,
        },
    ]
    return rule


def create_a_resellers_rules(cat, engine, rule: dict) -> None:
    """A reseller's rule set by an admin, then one set by its own key, which sees only its own."""
    reseller = ok(
        cat.post("/v1/accounts", json={"name": "R", "currency": "USD", "kind": "reseller"})
    )
    own = ok(
        cat.post(
            "/v1/topup-bonus-rules",
            json={
                "currency": "USD",
                "tiers": TIERS[:1],
                "owner_account_id": reseller["id"],
                "effective_from": JAN,
            },
        )
    )
    assert ok(cat.get(f"/v1/topup-bonus-rules/{rule['id']}"), 200) == rule
    listed = ok(cat.get("/v1/topup-bonus-rules", params={"owner_account_id": reseller["id"]}), 200)
    assert [r["id"] for r in listed["data"]] == [own["id"]]
    # a reseller key sets its own rules and sees only them; naming another owner looks unknown
    with Session(engine) as s:
        key = create_key(s, role="reseller", account_id=reseller["id"]).secret
        s.commit()
    as_reseller = {"Authorization": f"Bearer {key}"}
    mine = ok(
        cat.post(
            "/v1/topup-bonus-rules",
            json={"currency": "USD", "tiers": TIERS[:1]},
            headers=as_reseller,
        )
    )
    assert mine["owner_account_id"] == reseller["id"]
    seen = ok(cat.get("/v1/topup-bonus-rules", headers=as_reseller), 200)["data"]
    assert {r["id"] for r in seen} == {own["id"], mine["id"]}
    problem(cat.get(f"/v1/topup-bonus-rules/{rule['id']}", headers=as_reseller), 404, "not_found")
    problem(
        cat.post(
            "/v1/topup-bonus-rules",
            json={"currency": "USD", "tiers": TIERS[:1], "owner_account_id": "acc_other"},
            headers=as_reseller,
        ),
        404,
        "not_found",
    )


def refuse_bad_rules(cat, engine) -> None:
    """Both bonus kinds in one tier, unordered tiers, two rules at one instant: nothing changes."""
    before = row_counts(engine)
    both = [{"min_amount": "1", "bonus_pct": "1", "bonus_amount": "1"}]
    problem(
        cat.post("/v1/topup-bonus-rules", json={"currency": "USD", "tiers": both}),
        400,
        "validation_error",
    )
    problem(
        cat.post("/v1/topup-bonus-rules", json={"currency": "USD", "tiers": TIERS[::-1]}),
        400,
        "validation_error",
    )
    problem(
        cat.post(
            "/v1/topup-bonus-rules", json={"currency": "USD", "tiers": TIERS, "effective_from": JAN}
        ),
        409,
        "conflict",
    )
    assert row_counts(engine) == before


def test_topup_bonus_rules(cat, engine):
    """Bonus rule versions, then a reseller's own rules, in named steps.

    Each step reads the versions the steps before created.
    """
    rule = create_the_operators_rule(cat)
    create_a_resellers_rules(cat, engine, rule)
    refuse_bad_rules(cat, engine)


def test_failed_request_policies(cat, engine):
    default = ok(cat.get("/v1/failed-request-policies/default"), 200)
    assert default["builtin"] and default["rules"]["provider_error"] == "not_billed"
    v1 = ok(
        cat.post(
            "/v1/failed-request-policies",
            json={"id": "lenient", "rules": {"refusal": "not_billed"}},
        )
    )
    v2 = ok(cat.post("/v1/failed-request-policies", json={"id": "lenient", "rules": {}}))
    assert (v1["version"], v2["version"]) == (1, 2)
    assert v1["rules"] == {**default["rules"], "refusal": "not_billed"}
    assert v2["rules"] == default["rules"] and not v2["builtin"]
    assert ok(cat.get("/v1/failed-request-policies/lenient"), 200) == v2
    versions = ok(cat.get("/v1/failed-request-policies/lenient/versions"), 200)["data"]
    assert [v["version"] for v in versions] == [1, 2]
    assert [p["id"] for p in ok(cat.get("/v1/failed-request-policies"), 200)["data"]] == ["lenient"]
    before = row_counts(engine)
    problem(
        cat.post("/v1/failed-request-policies", json={"id": "x", "rules": {"refusal": "maybe"}}),
        400,
        "validation_error",
    )
    problem(
        cat.post("/v1/failed-request-policies", json={"id": "default"}), 400, "validation_error"
    )
    assert row_counts(engine) == before
    problem(cat.get("/v1/failed-request-policies/strict"), 404, "not_found")


def test_idempotent_replay_and_admin_only(cat, engine):
    body = {
        "id": "pk-a",
        "name": "A",
        "currency": "USD",
        "price": "1.00",
        "tokens": 10,
        "valid_days": 1,
    }
    key = {"Idempotency-Key": "create-pk-a"}
    bad = problem(
        cat.post("/v1/packages", json={**body, "tokens": 0}, headers=key), 400, "validation_error"
    )
    assert bad  # a failed request does not use up the key
    first = cat.post("/v1/packages", json=body, headers=key)
    assert first.status_code == 201
    again = cat.post("/v1/packages", json=body, headers=key)
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    problem(
        cat.post("/v1/packages", json={**body, "name": "B"}, headers=key),
        409,
        "idempotency_conflict",
    )
    assert len(ok(cat.get("/v1/packages"), 200)["data"]) == 1

    with Session(engine) as s:
        finance = create_key(s, role="finance")
        s.commit()
    headers = {"Authorization": f"Bearer {finance.secret}"}
    # finance reads the catalog (tests/e2e/test_operator_api.py: who reads what) but only an
    # admin writes it
    assert ok(cat.get("/v1/models", headers=headers), 200)["data"]
    problem(
        cat.post("/v1/packages", json={**body, "id": "pk-f"}, headers=headers), 403, "forbidden"
    )
