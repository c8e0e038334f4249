"""Models, top-up bonus rules, token packages, coding plans and failed-request policies.

All on real PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from ledger.amounts import Amount
from ledger.errors import InvalidAmount, MixedUnits, NotFound
from plans import catalog
from plans.errors import InvalidCatalog, InvalidPrice, UnknownModel
from tests.integration.plans.conftest import EUR, FEB, JAN, MAR, USD, usd

US = timedelta(microseconds=1)
TIERS = [
    {"min_amount": "100.00", "bonus_pct": "5"},
    {"min_amount": "500.00", "bonus_pct": "7.5", "bonus_expires_days": 30},
    {"min_amount": "1000.00", "bonus_amount": "150.00"},
]


def grant(session: Session, amount: str, at=FEB, owner=None):
    return catalog.bonus_for_topup(
        session, currency=USD, amount=usd(amount), at=at, owner_account_id=owner
    )


def test_models_are_unique_and_listed_by_id(models):
    with pytest.raises(catalog.CatalogConflict, match="already exists"):
        catalog.create_model(models, id="m-large", provider="x", display_name="y")
    models.rollback()
    with pytest.raises(InvalidCatalog, match="must be 1-128 characters"):
        catalog.create_model(models, id=" bad id", provider="x", display_name="y")
    page = catalog.list_models(models, limit=1)
    assert [m.id for m in page.items] == ["m-large"] and page.has_more
    page = catalog.list_models(models, limit=1, starting_after="m-large")
    assert [m.id for m in page.items] == ["m-small"] and not page.has_more
    with pytest.raises(NotFound):
        catalog.get_model(models, "m-nope")


def test_highest_tier_reached_applies_from_its_exact_boundary(session):
    rule = catalog.create_topup_bonus_rule(session, currency="USD", tiers=TIERS, effective_from=JAN)
    session.commit()
    assert grant(session, "99.99") is None
    assert grant(session, "100.00") == catalog.BonusGrant(rule.id, usd("5.00"), None)
    assert grant(session, "499.99") == catalog.BonusGrant(rule.id, usd("24.9995"), None)
    assert grant(session, "500.00") == catalog.BonusGrant(rule.id, usd("37.50"), 30)
    # exact: 7.5 % of 777.77 is 58.33275, not rounded to cents
    assert grant(session, "777.77").amount == Amount.parse("58.33275", USD)
    assert grant(session, "1000.00") == catalog.BonusGrant(rule.id, usd("150.00"), None)
    assert grant(session, "5000.00").amount == usd("150.00")
    assert grant(session, "100.00", at=JAN - US) is None  # before the rule took effect
    with pytest.raises(MixedUnits):
        catalog.bonus_for_topup(session, currency=USD, amount=Amount.parse("100", EUR), at=FEB)


def test_rules_are_versioned_by_effective_from(session):
    first = catalog.create_topup_bonus_rule(
        session, currency="USD", tiers=TIERS, effective_from=JAN
    )
    second = catalog.create_topup_bonus_rule(
        session, currency="USD", tiers=[{"min_amount": "50", "bonus_pct": "1"}], effective_from=FEB
    )
    stop = catalog.create_topup_bonus_rule(session, currency="USD", tiers=[], effective_from=MAR)
    session.commit()
    assert grant(session, "100", at=FEB - US) == catalog.BonusGrant(first.id, usd("5"), None)
    assert grant(session, "100", at=FEB) == catalog.BonusGrant(second.id, usd("1"), None)
    assert grant(session, "100", at=MAR) is None  # an empty rule ends bonuses
    assert catalog.get_topup_bonus_rule(session, stop.id).tiers == ()
    assert [r.id for r in catalog.list_topup_bonus_rules(session, currency="USD").items] == [
        first.id,
        second.id,
        stop.id,
    ]
    with pytest.raises(catalog.CatalogConflict, match="already has a USD top-up bonus rule"):
        catalog.create_topup_bonus_rule(session, currency="USD", tiers=TIERS, effective_from=FEB)


def test_reseller_owned_rules_apply_to_its_sub_accounts_only(session):
    operator = catalog.create_topup_bonus_rule(
        session, currency="USD", tiers=TIERS, effective_from=JAN
    )
    reseller = catalog.create_topup_bonus_rule(
        session,
        currency="USD",
        tiers=[{"min_amount": "10", "bonus_amount": "2.00", "bonus_expires_days": 7}],
        owner_account_id="acc_r1",
        effective_from=JAN,  # same instant as the operator's: a different owner
    )
    session.commit()
    assert grant(session, "100", owner="acc_r1") == catalog.BonusGrant(reseller.id, usd("2"), 7)
    assert grant(session, "100") == catalog.BonusGrant(operator.id, usd("5"), None)
    assert grant(session, "100", owner="acc_r2") is None  # no fallback to the operator's rule
    listed = catalog.list_topup_bonus_rules(session, owner_account_id="acc_r1").items
    assert [r.id for r in listed] == [reseller.id]


def test_bad_bonus_tiers_are_refused(session):
    cases = [
        ([{"min_amount": "100", "bonus_pct": "5", "bonus_amount": "1"}], InvalidCatalog, "one of"),
        ([{"min_amount": "100"}], InvalidCatalog, "exactly one of"),
        ([{"min_amount": "100", "bonus_pct": "101"}], InvalidPrice, "at most 100"),
        ([{"min_amount": "100", "bonus_pct": "1.234"}], InvalidPrice, "decimal places"),
        ([{"min_amount": "100.001", "bonus_pct": "1"}], InvalidAmount, "minor units"),
        ([{"min_amount": "-1", "bonus_pct": "1"}], InvalidAmount, "negative"),
        (
            [{"min_amount": "100", "bonus_pct": "1"}, {"min_amount": "100", "bonus_pct": "2"}],
            InvalidCatalog,
            "strictly increasing",
        ),
        (
            [{"min_amount": "100", "bonus_pct": "1", "bonus_expires_days": 0}],
            InvalidCatalog,
            "at least 1",
        ),
    ]
    for tiers, error, fragment in cases:
        with pytest.raises(error, match=fragment):
            catalog.create_topup_bonus_rule(session, currency="USD", tiers=tiers)
        session.rollback()
    assert catalog.list_topup_bonus_rules(session).items == ()


def test_packages(models):
    spec = catalog.create_package(
        models,
        id="pk-1m",
        name="1M tokens",
        currency="USD",
        price="9.00",
        tokens=1_000_000,
        models=["m-large"],
        valid_days=30,
    )
    models.commit()
    assert catalog.get_package(models, "pk-1m") == spec
    assert spec.price == usd("9") and spec.models == ("m-large",) and spec.currency == USD
    base = {
        "id": "pk-2",
        "name": "x",
        "currency": "USD",
        "price": "1",
        "tokens": 1,
        "valid_days": 1,
    }
    cases = [
        ({"tokens": 0}, InvalidCatalog, "at least one token"),
        ({"valid_days": 0}, InvalidCatalog, "valid_days must be at least 1"),
        ({"price": "-1"}, InvalidAmount, "negative"),
        ({"price": "0.001"}, InvalidAmount, "minor units"),
        ({"models": ["m-nope"]}, UnknownModel, "m-nope"),
        ({"id": "pk-1m"}, catalog.CatalogConflict, "already exists"),
    ]
    for extra, error, fragment in cases:
        with pytest.raises(error, match=fragment):
            catalog.create_package(models, **{**base, **extra})
        models.rollback()
    assert [p.id for p in catalog.list_packages(models).items] == ["pk-1m"]
    with pytest.raises(NotFound):
        catalog.get_package(models, "pk-2")


def test_plans(models):
    spec = catalog.create_plan(
        models,
        id="coder",
        name="Coder",
        currency="USD",
        monthly_fee="20.00",
        windows=[
            {"kind": "rolling_5h", "unit": "requests", "limit": 50},
            {"kind": "weekly", "unit": "requests", "limit": 500},
            {"kind": "weekly", "unit": "tokens", "limit": 5_000_000},
        ],
        on_exhausted="wallet",
        models=["m-large", "m-small"],
    )
    models.commit()
    assert catalog.get_plan(models, "coder") == spec
    assert spec.windows[0] == catalog.WindowSpec("rolling_5h", "requests", 50)
    assert spec.monthly_fee == usd("20") and spec.on_exhausted == "wallet"
    base = {
        "id": "p2",
        "name": "x",
        "currency": "USD",
        "monthly_fee": "0",
        "windows": [{"kind": "monthly", "unit": "tokens", "limit": 1}],
        "on_exhausted": "block",
    }
    twice = [{"kind": "weekly", "unit": "requests", "limit": n} for n in (1, 2)]
    cases = [
        ({"windows": twice}, "both weekly windows on requests"),
        ({"windows": []}, "at least one quota window"),
        ({"windows": [{"kind": "daily", "unit": "tokens", "limit": 1}]}, "kind must be one of"),
        ({"windows": [{"kind": "monthly", "unit": "tokens", "limit": 0}]}, "at least 1"),
        ({"on_exhausted": "overdraft"}, "'block' or 'wallet'"),
    ]
    for extra, fragment in cases:
        with pytest.raises(InvalidCatalog, match=fragment):
            catalog.create_plan(models, **{**base, **extra})
        models.rollback()
    assert [p.id for p in catalog.list_plans(models).items] == ["coder"]


def test_failed_request_policies_are_versioned_with_defaults(session):
    default = catalog.get_failed_request_policy(session, None)
    assert default is catalog.get_failed_request_policy(session, "default")
    assert dict(default.rules) == {
        "provider_error": "not_billed",
        "provider_truncation": "billed",
        "refusal": "billed",
        "client_disconnect": "billed",
        "empty_completion": "not_billed",
    }
    v1 = catalog.create_failed_request_policy(
        session, id="lenient", rules={"refusal": "not_billed"}
    )
    v2 = catalog.create_failed_request_policy(
        session, id="lenient", rules={"provider_truncation": "output_not_billed"}
    )
    session.commit()
    assert (v1.version, v2.version) == (1, 2)
    assert v1.rules["refusal"] == "not_billed" and v1.rules["provider_error"] == "not_billed"
    assert v2.rules["refusal"] == "billed"  # a version is complete, not a patch
    assert v2.rules["provider_truncation"] == "output_not_billed"
    latest = catalog.get_failed_request_policy(session, "lenient")
    assert (latest.version, dict(latest.rules)) == (2, dict(v2.rules))
    assert catalog.get_failed_request_policy(session, "lenient", version=1).rules == v1.rules
    assert [p.version for p in catalog.list_failed_request_policy_versions(session, "lenient")] == [
        1,
        2,
    ]
    assert [(p.id, p.version) for p in catalog.list_failed_request_policies(session).items] == [
        ("lenient", 2)
    ]
    with pytest.raises(NotFound):
        catalog.get_failed_request_policy(session, "strict")
    for rules, fragment in [
        ({"refusal": "sometimes"}, "must be one of"),
        ({"timeout": "billed"}, "unknown failure kinds"),
    ]:
        with pytest.raises(InvalidCatalog, match=fragment):
            catalog.create_failed_request_policy(session, id="lenient", rules=rules)
    with pytest.raises(InvalidCatalog, match="built-in"):
        catalog.create_failed_request_policy(session, id="default", rules={})
