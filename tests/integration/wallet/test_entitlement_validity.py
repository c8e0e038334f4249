"""Entitlements pay only for usage dated inside their own validity.

Packages, plan quota and bonus credit alike: a November purchase does not pay for October usage
reported late.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from plans import catalog
from tests.integration.wallet.conftest import funded, package, plan, usage
from wallet.balance import balance_of
from wallet.charging import charge_batch
from wallet.packages import buy_package
from wallet.subscriptions import start_subscription
from wallet.topups import record_topup

NOV = datetime(2026, 11, 10, tzinfo=UTC)
OCT = datetime(2026, 10, 20, tzinfo=UTC)


def test_a_package_does_not_pay_for_usage_dated_before_it_was_bought(priced: Session):
    package(priced, tokens=5000)
    acc = funded(priced, "1.00")
    buy_package(priced, acc.id, "pk", at=NOV)  # 0.50 from the wallet
    priced.commit()

    early, late = charge_batch(
        priced, [usage("oct", acc, at=OCT), usage("nov", acc, at=NOV + timedelta(hours=1))]
    )
    priced.commit()

    assert (early.status, late.status) == ("charged", "charged")
    assert early.billed is not None and early.billed.format() == "0.015"  # paid money
    assert late.billed is not None and late.billed.atoms == 0  # package tokens
    b = balance_of(priced, acc)
    assert b.paid.format() == "0.485"
    assert [p.tokens_remaining for p in b.packages] == [4000]


def test_bonus_credit_does_not_pay_for_usage_dated_before_it_was_granted(priced: Session):
    catalog.create_topup_bonus_rule(
        priced,
        currency="USD",
        tiers=[{"min_amount": "1.00", "bonus_amount": "1.00"}],
        effective_from=OCT - timedelta(days=30),
    )
    priced.commit()
    acc = funded(priced, None)
    record_topup(priced, acc.id, amount="1.00", method="bank_transfer", at=NOV)
    priced.commit()
    assert balance_of(priced, acc).bonus.format() == "1.00"

    (r,) = charge_batch(priced, [usage("oct", acc, at=OCT)])
    priced.commit()

    assert r.status == "charged"
    b = balance_of(priced, acc)
    assert (b.bonus.format(), b.paid.format()) == ("1.00", "0.985")  # bonus untouched


def test_a_plan_does_not_cover_usage_dated_before_the_subscription_began(priced: Session):
    plan(priced, limit=10, fee="1.00")
    acc = funded(priced, "2.00")
    start_subscription(priced, acc.id, "p", at=NOV)
    priced.commit()

    early, late = charge_batch(
        priced, [usage("oct", acc, at=OCT), usage("nov", acc, at=NOV + timedelta(hours=1))]
    )
    priced.commit()

    assert early.billed is not None and early.billed.format() == "0.015"  # wallet money
    assert late.billed is not None and late.billed.atoms == 0  # plan quota
    b = balance_of(priced, acc)
    assert b.paid.format() == "0.985"
    assert b.subscription is not None
    assert [w.used for w in b.subscription.windows] == [1]


def test_without_other_money_usage_before_an_entitlement_is_refused(priced: Session):
    package(priced, tokens=5000, price="0.50")
    acc = funded(priced, "0.50")
    buy_package(priced, acc.id, "pk", at=NOV)  # spends all the money
    priced.commit()

    (r,) = charge_batch(priced, [usage("oct", acc, at=OCT)])
    priced.commit()

    assert (r.status, r.reason) == ("rejected", "insufficient_funds")
    assert [p.tokens_remaining for p in balance_of(priced, acc).packages] == [5000]


@pytest.mark.parametrize("days_before", [0, 1])
def test_usage_at_the_instant_of_purchase_is_covered(priced: Session, days_before: int):
    package(priced, tokens=5000)
    acc = funded(priced, "1.00")
    buy_package(priced, acc.id, "pk", at=NOV)
    priced.commit()

    (r,) = charge_batch(priced, [usage("u", acc, at=NOV - timedelta(days=days_before))])
    priced.commit()

    paid_by_package = r.billed is not None and r.billed.atoms == 0
    assert paid_by_package is (days_before == 0)
