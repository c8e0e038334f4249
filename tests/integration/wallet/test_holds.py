"""Gateway holds through the service layer on real PostgreSQL.

What a hold reserves (lots, package tokens, plan quota, credit limit, the reseller's float) is
exactly what its capture, void or expiry gives back, and no input makes capture fail.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from ledger.base import utcnow
from ledger.holds import expire_holds
from tests.integration.wallet.conftest import funded, hold, package, paid_cents, plan, usage
from wallet.authorizations import expire_authorizations, void_authorization
from wallet.balance import balance_of
from wallet.charging import charge_batch
from wallet.lots import expire_lots
from wallet.models import Authorization, CreditLot
from wallet.packages import buy_package
from wallet.subscriptions import start_subscription


def test_capture_beyond_its_reservation_is_charged_as_plain_usage(priced: Session):
    package(priced)
    acc = funded(priced, "1.00")
    buy_package(priced, acc.id, "pk")
    priced.commit()
    auth = hold(priced, acc, 1000)  # reserves 1,000 package tokens
    assert (auth.status, auth.held_tokens) == ("approved", 1000)
    r = charge_batch(priced, [usage("big", acc, output_tokens=2000, authorization_id=auth.id)])
    priced.commit()
    # the hold's 1,000 package tokens pay half; the package's other tokens pay the rest
    assert (r[0].status, r[0].reason) == ("charged", None)
    assert (r[0].billed.format(), r[0].credited.format()) == ("0.00", "0.00")
    lot = priced.query(CreditLot).filter_by(account_id=acc.id, kind="package").one()
    assert (lot.remaining, lot.reserved) == (3000, 0)
    assert paid_cents(priced, acc) == "0.50"


def test_capture_beyond_what_the_wallet_has_is_capped_not_a_crash(priced: Session):
    acc = funded(priced, "0.02")
    auth = hold(priced, acc, 1000)  # 0.015 of 0.02 reserved
    r = charge_batch(priced, [usage("big", acc, output_tokens=2000, authorization_id=auth.id)])
    priced.commit()
    # 2,000 tokens cost 0.03: the wallet's 0.02 pays, the rest is credited, not an error
    assert (r[0].status, r[0].reason) == ("charged", "capped_at_hold")
    assert (r[0].billed.format(), r[0].credited.format()) == ("0.02", "0.01")
    assert paid_cents(priced, acc) == "0.00"


def test_a_hold_reserves_plan_quota_and_gives_it_back(priced: Session):
    plan(priced, limit=1, on_exhausted="block")
    acc = funded(priced, "2.00")
    start_subscription(priced, acc.id, "p")
    priced.commit()
    first = hold(priced, acc)
    second = hold(priced, acc)
    assert first.status == "approved" and first.plan_covered
    assert (second.status, second.decline_code) == ("declined", "plan_quota_exhausted")
    void_authorization(priced, first.id)
    priced.commit()
    third = hold(priced, acc)
    assert third.status == "approved" and third.plan_covered
    r = charge_batch(priced, [usage("r", acc, authorization_id=third.id)])
    priced.commit()
    assert (r[0].status, r[0].billed.format(), r[0].reason) == ("charged", "0.00", None)
    r = charge_batch(priced, [usage("r2", acc)])
    assert r[0].reason == "plan_quota_exhausted"


def test_two_records_naming_one_hold_capture_once(priced: Session):
    acc = funded(priced, "1.00")
    auth = hold(priced, acc)
    r = charge_batch(
        priced,
        [usage("a", acc, authorization_id=auth.id), usage("b", acc, authorization_id=auth.id)],
    )
    priced.commit()
    assert [x.status for x in r] == ["charged", "charged"]
    assert [x.billed.format() for x in r] == ["0.015", "0.015"]
    assert paid_cents(priced, acc) == "0.97"
    assert priced.get_one(Authorization, auth.id).usage_record_id == "a"


def test_a_hold_reserves_credit_limit(priced: Session):
    acc = funded(priced, None, credit_limit="0.02")
    first, second = hold(priced, acc), hold(priced, acc)
    assert first.status == "approved" and first.held_money == 15 * 10**15
    assert (second.status, second.decline_code) == ("declined", "insufficient_funds")
    b = balance_of(priced, acc)
    assert (b.held.format(), b.available.format()) == ("0.015", "0.005")
    void_authorization(priced, first.id)
    priced.commit()
    b = balance_of(priced, acc)
    assert (b.held.format(), b.available.format()) == ("0.00", "0.02")


def test_a_sub_account_hold_reserves_the_reseller_float(priced: Session):
    reseller = funded(priced, "0.02", kind="reseller")
    sub = funded(priced, "1.00", parent_id=reseller.id)
    first, second = hold(priced, sub), hold(priced, sub)
    assert first.status == "approved"
    assert (second.status, second.decline_code) == ("declined", "reseller_float_exhausted")
    r = charge_batch(priced, [usage("s", sub, authorization_id=first.id)])
    priced.commit()
    assert r[0].status == "charged"
    assert paid_cents(priced, reseller) == "0.005"
    assert paid_cents(priced, sub) == "0.985"


def test_reseller_records_keep_their_own_burn_order_in_a_mixed_batch(priced: Session):
    package(priced)
    reseller = funded(priced, "1.00", kind="reseller")
    buy_package(priced, reseller.id, "pk")
    sub = funded(priced, "1.00", parent_id=reseller.id)
    priced.commit()
    r = charge_batch(priced, [usage("sub", sub), usage("own", reseller)])
    priced.commit()
    assert [x.status for x in r] == ["charged", "charged"]
    assert r[1].billed.format() == "0.00"  # the reseller's own package pays its own usage
    assert paid_cents(priced, reseller) == "0.485"  # 1.00 - 0.50 package - 0.015 wholesale


def test_lots_expiring_before_the_hold_do_not_back_it(priced: Session):
    acc = funded(priced, "1.00")
    lot = priced.query(CreditLot).filter_by(account_id=acc.id).one()
    lot.expires_at = utcnow() + timedelta(minutes=5)
    priced.commit()
    auth = hold(priced, acc, ttl=timedelta(minutes=10))
    assert (auth.status, auth.decline_code) == ("declined", "insufficient_funds")


def test_a_reserved_lot_expires_only_after_its_hold_is_resolved(priced: Session):
    acc = funded(priced, "1.00")
    lot = priced.query(CreditLot).filter_by(account_id=acc.id).one()
    lot.expires_at = utcnow() + timedelta(minutes=20)
    priced.commit()
    auth = hold(priced, acc, ttl=timedelta(minutes=10))
    assert auth.status == "approved"
    later = utcnow() + timedelta(minutes=30)
    assert expire_lots(priced, now=later) == []  # the hold still holds part of it
    priced.commit()
    assert expire_authorizations(priced, now=later) == [auth.id]
    assert expire_lots(priced, now=later) == [lot.id]
    priced.commit()
    priced.refresh(lot)
    assert (lot.remaining, paid_cents(priced, acc)) == (0, "0.00")


def test_authorizations_write_no_ledger_holds(priced: Session):
    acc = funded(priced, "1.00")
    auth = hold(priced, acc)
    much_later = utcnow() + timedelta(hours=3)
    assert expire_holds(priced, now=much_later) == []  # the reservation lives in the wallet
    assert expire_authorizations(priced, now=much_later) == [auth.id]
    priced.commit()
    b = balance_of(priced, acc)
    assert (b.held.format(), b.available.format()) == ("0.00", "1.00")
