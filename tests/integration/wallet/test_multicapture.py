"""Multi-capture and incremental authorizations through the service layer on real PostgreSQL.

A grant reserves what the account can give, records that name it capture from it many times,
increments add to it, void and expiry give back exactly what is left; every atom is where the audit
(run after each test) expects it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.errors import NotFound
from ledger.units import currency
from plans import catalog
from tests.integration.wallet.conftest import MODEL, funded, hold, package, paid_cents, usage
from wallet.authorizations import (
    expire_authorizations,
    get_authorization,
    grant,
    increment,
    void_authorization,
)
from wallet.balance import balance_of
from wallet.charging import charge_batch
from wallet.errors import InvalidRequest
from wallet.gateway import AuthorizationClosed, NotMultiCapture
from wallet.models import CreditLot
from wallet.packages import buy_package

USD = currency("USD")
TEN_MIN = timedelta(minutes=10)


def money(atoms: int) -> str:
    return Amount(atoms, USD).format()


def test_a_grant_is_captured_many_times_incremented_and_voided(priced: Session):
    acc = funded(priced, "10.00")
    g = grant(priced, account_id=acc.id, amount="1.00", ttl=TEN_MIN)
    priced.commit()
    assert (g.status, money(g.granted), g.final, money(g.remaining)) == (
        "approved",
        "1.00",
        False,
        "1.00",
    )
    b = balance_of(priced, acc)
    assert (b.held.format(), b.available.format(), b.paid.format()) == ("1.00", "9.00", "10.00")

    remaining = []
    for n in range(10):  # 0.015 each
        (r,) = charge_batch(priced, [usage(f"c{n}", acc, authorization_id=g.id)])
        priced.commit()
        assert (r.status, r.billed.format(), r.reason) == ("charged", "0.015", None)
        assert r.authorization is not None and r.authorization.id == g.id
        remaining.append(money(r.authorization.remaining))
    assert remaining[0] == "0.985" and remaining[-1] == "0.85"
    b = balance_of(priced, acc)
    assert (b.held.format(), b.paid.format(), b.available.format()) == ("0.85", "9.85", "9.00")

    more = increment(priced, g.id, amount="0.50")
    priced.commit()
    assert (money(more.granted_now or 0), money(more.granted), money(more.remaining)) == (
        "0.50",
        "1.50",
        "1.35",
    )
    voided = void_authorization(priced, g.id)
    priced.commit()
    assert (voided.status, money(voided.released_money), money(voided.remaining)) == (
        "voided",
        "1.35",
        "0.00",
    )
    b = balance_of(priced, acc)
    assert (b.held.format(), b.paid.format(), b.available.format()) == ("0.00", "9.85", "9.85")
    # voiding again changes nothing; a late record naming it is plain usage
    assert void_authorization(priced, g.id).status == "voided"
    (late,) = charge_batch(priced, [usage("late", acc, authorization_id=g.id)])
    priced.commit()
    assert (late.status, late.billed.format(), late.authorization) == ("charged", "0.015", None)
    view = get_authorization(priced, g.id)
    assert (money(view.captured), view.captures) == ("0.15", 10)


def test_a_grant_gives_what_the_account_has_and_says_when_it_is_the_last(priced: Session):
    acc = funded(priced, "0.30")
    g = grant(priced, account_id=acc.id, amount="1.00", ttl=TEN_MIN)
    assert (g.status, money(g.granted), g.final) == ("approved", "0.30", True)
    second = grant(priced, account_id=acc.id, amount="0.10", ttl=TEN_MIN)
    priced.commit()
    assert (second.status, second.decline_code, second.final) == (
        "declined",
        "insufficient_funds",
        True,
    )
    exact = funded(priced, "0.50")
    g2 = grant(priced, account_id=exact.id, amount="0.50", ttl=TEN_MIN)
    priced.commit()
    assert (money(g2.granted), g2.final) == ("0.50", True)  # all it had: nothing left to give


def test_a_record_beyond_the_grant_is_plain_usage_and_the_wallet_is_the_hard_stop(priced: Session):
    acc = funded(priced, "0.05")
    g = grant(priced, account_id=acc.id, amount="0.03", ttl=TEN_MIN)
    priced.commit()
    rs = charge_batch(priced, [usage(f"r{n}", acc, authorization_id=g.id) for n in range(4)])
    priced.commit()
    # two records use the grant, the third is paid from the free 0.02, the fourth finds 0.005
    assert [(r.billed.format(), r.credited.format(), r.reason) for r in rs] == [
        ("0.015", "0.00", None),
        ("0.015", "0.00", None),
        ("0.015", "0.00", None),
        ("0.005", "0.01", "capped_at_hold"),
    ]
    assert paid_cents(priced, acc) == "0.00"
    view = get_authorization(priced, g.id)
    assert (money(view.captured), money(view.remaining)) == ("0.03", "0.00")


def test_records_that_name_the_wrong_authorization_are_rejected_alone(priced: Session):
    acc, other = funded(priced, "1.00"), funded(priced, "1.00")
    g = grant(priced, account_id=acc.id, amount="0.50", model=MODEL, ttl=TEN_MIN)
    priced.commit()
    rs = charge_batch(
        priced,
        [
            usage("foreign", other, authorization_id=g.id),
            usage("unknown", acc, authorization_id="auth_nope"),
            usage("fine", acc, authorization_id=g.id),
            usage("plain", acc),
        ],
    )
    priced.commit()
    assert [(r.status, r.reason) for r in rs] == [
        ("rejected", "authorization_account_mismatch"),
        ("rejected", "unknown_authorization"),
        ("charged", None),
        ("charged", None),
    ]
    # rejected ids stay unclaimed: sent again correctly, they are charged
    (again,) = charge_batch(priced, [usage("foreign", other)])
    assert again.status == "charged"


def test_a_model_scoped_grant_refuses_records_of_another_model(priced: Session):
    from dataclasses import replace

    catalog.create_model(priced, id="m2", provider="acme", display_name="M2")
    priced.commit()
    acc = funded(priced, "1.00")
    g = grant(priced, account_id=acc.id, amount="0.50", model=MODEL, ttl=TEN_MIN)
    priced.commit()
    assert g.price is not None and g.price.output_per_mtok == 15
    (r,) = charge_batch(priced, [replace(usage("x", acc, authorization_id=g.id), model="m2")])
    assert (r.status, r.reason) == ("rejected", "authorization_model_mismatch")


def test_expiry_returns_the_rest_and_records_made_before_it_still_capture(priced: Session):
    acc = funded(priced, "1.00")
    t0 = utcnow()
    g = grant(priced, account_id=acc.id, amount="0.50", ttl=TEN_MIN, at=t0)
    priced.commit()
    after = t0 + timedelta(minutes=11)
    # the expiry job has not run: a record made before the expiry captures, then closes it
    (r,) = charge_batch(
        priced,
        [usage("before", acc, at=t0 + timedelta(minutes=9), authorization_id=g.id)],
        now=after,
    )
    priced.commit()
    assert (r.status, r.billed.format()) == ("charged", "0.015")
    assert r.authorization is not None and r.authorization.status == "expired"
    assert expire_authorizations(priced, now=after) == []  # nothing left to expire
    b = balance_of(priced, acc)
    assert (b.held.format(), b.paid.format()) == ("0.00", "0.985")


def test_the_expiry_job_releases_a_grant_and_later_records_are_plain_usage(priced: Session):
    acc = funded(priced, "1.00")
    t0 = utcnow()
    g = grant(priced, account_id=acc.id, amount="0.50", ttl=TEN_MIN, at=t0)
    priced.commit()
    after = t0 + timedelta(minutes=11)
    assert expire_authorizations(priced, now=after) == [g.id]
    priced.commit()
    view = get_authorization(priced, g.id)
    assert (view.status, money(view.released_money)) == ("expired", "0.50")
    with pytest.raises(AuthorizationClosed):
        increment(priced, g.id, amount="0.10", at=after)
    priced.rollback()
    (r,) = charge_batch(priced, [usage("late", acc, authorization_id=g.id)], now=after)
    priced.commit()
    assert (r.status, r.authorization) == ("charged", None)
    assert paid_cents(priced, acc) == "0.985"


def test_an_increment_carries_the_usage_so_far_and_extends_the_life(priced: Session):
    acc = funded(priced, "1.00")
    t0 = utcnow()
    g = grant(priced, account_id=acc.id, amount="0.03", ttl=TEN_MIN, at=t0)
    priced.commit()
    later = t0 + timedelta(minutes=5)
    more = increment(
        priced,
        g.id,
        amount="0.03",
        ttl=timedelta(minutes=30),
        records=(usage("u1", acc, authorization_id=g.id), usage("u2", acc, authorization_id=g.id)),
        at=later,
    )
    priced.commit()
    assert more.usage is not None and [u.status for u in more.usage] == ["charged", "charged"]
    assert (money(more.captured), money(more.granted), money(more.remaining)) == (
        "0.03",
        "0.06",
        "0.03",
    )
    assert more.expires_at == later + timedelta(minutes=30)
    single = hold(priced, acc)
    with pytest.raises(NotMultiCapture):
        increment(priced, single.id, amount="0.01")
    priced.rollback()
    with pytest.raises(NotFound):
        increment(priced, "auth_nope", amount="0.01")
    priced.rollback()
    with pytest.raises(InvalidRequest):
        increment(priced, g.id, tokens=10)  # a money grant grows in money
    priced.rollback()


def test_a_grant_within_the_credit_limit_reserves_overage(priced: Session):
    acc = funded(priced, None, credit_limit="0.15")
    g = grant(priced, account_id=acc.id, amount="1.00", ttl=TEN_MIN)
    priced.commit()
    assert (money(g.granted), g.final) == ("0.15", True)
    b = balance_of(priced, acc)
    assert (b.held.format(), b.available.format()) == ("0.15", "0.00")
    (r,) = charge_batch(priced, [usage("o", acc, authorization_id=g.id)])
    priced.commit()
    assert r.billed.format() == "0.015"
    void_authorization(priced, g.id)
    priced.commit()
    b = balance_of(priced, acc)
    assert (b.held.format(), b.overage_unbilled.format(), b.available.format()) == (
        "0.00",
        "0.015",
        "0.135",
    )


def test_a_token_grant_reserves_package_tokens(priced: Session):
    package(priced)  # 5,000 tokens for 0.50
    acc = funded(priced, "1.00")
    buy_package(priced, acc.id, "pk")
    priced.commit()
    g = grant(priced, account_id=acc.id, tokens=2000, model=MODEL, ttl=TEN_MIN)
    priced.commit()
    assert (g.token_grant, g.granted, g.remaining, g.final) == (True, 2000, 2000, False)
    (r,) = charge_batch(priced, [usage("t", acc, authorization_id=g.id)])
    priced.commit()
    assert (r.billed.format(), r.authorization.captured, r.authorization.remaining) == (
        "0.00",
        1000,
        1000,
    )
    lot = priced.query(CreditLot).filter_by(account_id=acc.id, kind="package").one()
    assert (lot.remaining, lot.reserved) == (3000, 1000)
    void_authorization(priced, g.id)
    priced.commit()
    priced.refresh(lot)
    assert (lot.remaining, lot.reserved) == (4000, 0)
    none_left = funded(priced, "1.00")
    d = grant(priced, account_id=none_left.id, tokens=100, model=MODEL, ttl=TEN_MIN)
    priced.commit()
    assert (d.status, d.decline_code) == ("declined", "insufficient_funds")


def test_a_sub_account_grant_reserves_the_reseller_float_at_wholesale(priced: Session):
    reseller = funded(priced, "0.10", kind="reseller")
    sub = funded(priced, "1.00", parent_id=reseller.id)
    with pytest.raises(InvalidRequest, match="model"):
        grant(priced, account_id=sub.id, amount="0.50", ttl=TEN_MIN)
    priced.rollback()
    # list price for both: wholesale costs what retail charges, so the float limits the grant
    g = grant(priced, account_id=sub.id, amount="0.50", model=MODEL, ttl=TEN_MIN)
    priced.commit()
    assert (money(g.granted), g.final) == ("0.10", True)
    assert balance_of(priced, reseller).held.format() == "0.10"
    (r,) = charge_batch(priced, [usage("s", sub, authorization_id=g.id)])
    priced.commit()
    assert r.billed.format() == "0.015"
    void_authorization(priced, g.id)
    priced.commit()
    assert paid_cents(priced, reseller) == "0.085"
    assert paid_cents(priced, sub) == "0.985"
    assert balance_of(priced, reseller).held.format() == "0.00"


def test_grant_input_is_checked(priced: Session):
    acc = funded(priced, "1.00")
    for kw in ({}, {"amount": "1.00", "tokens": 5}, {"amount": "-1"}, {"amount": "0"}):
        with pytest.raises(InvalidRequest):
            grant(priced, account_id=acc.id, ttl=TEN_MIN, **kw)
        priced.rollback()
    with pytest.raises(NotFound):
        grant(priced, account_id="acc_nope", amount="1.00", ttl=TEN_MIN)
    priced.rollback()
