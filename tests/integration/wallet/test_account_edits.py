"""Account edits through the service layer on real PostgreSQL.

Settings change under the row lock, what changed is reported before → after, suspension stops usage
and new authorizations (captures of authorizations approved before still go through), closing is
refused while anything remains and is final.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from ledger.errors import NotFound
from plans import catalog
from tests.integration.wallet.conftest import MODEL, funded, hold, usage
from wallet.accounts import Scope, create_account, update_account
from wallet.authorizations import grant, increment, void_authorization
from wallet.balance import balance_of
from wallet.charging import charge_batch
from wallet.errors import AccountClosed, AccountNotEmpty, InvalidRequest
from wallet.models import Account
from wallet.refunds import refund_topup

TEN_MIN = timedelta(minutes=10)


def test_settings_change_and_the_diff_lists_only_what_changed(priced: Session):
    acc = funded(priced, None)
    catalog.create_failed_request_policy(
        priced,
        id="lenient",
        rules={
            "provider_error": "not_billed",
            "provider_truncation": "not_billed",
            "refusal": "not_billed",
            "client_disconnect": "not_billed",
            "empty_completion": "not_billed",
        },
    )
    _, diff = update_account(
        priced,
        acc.id,
        {
            "name": " Renamed ",
            "credit_limit": "25.50",
            "failed_request_policy_id": "lenient",
            "discounts": [{"model": MODEL, "pct": "10"}],
            "burn_order": ["paid", "bonus", "plan", "package", "overage"],
            "low_balance_threshold": "2.00",
        },
    )
    priced.commit()
    assert diff == {
        "name": {"before": "C", "after": "Renamed"},
        "credit_limit": {"before": "0.00", "after": "25.50"},
        "failed_request_policy_id": {"before": None, "after": "lenient"},
        "discounts": {"before": [], "after": [{"model": MODEL, "pct": "10"}]},
        "burn_order": {"before": None, "after": ["paid", "bonus", "plan", "package", "overage"]},
        "low_balance_threshold": {"before": None, "after": "2.00"},
    }
    priced.expire_all()
    stored = priced.get_one(Account, acc.id)
    assert (stored.name, stored.credit_limit, stored.burn_order[0]) == (
        "Renamed",
        25_500_000_000_000_000_000,
        "paid",
    )
    # the discount and the credit limit are what the gateway now uses: 1,000 output tokens at
    # 15/Mtok less 10 % = 0.0135, paid from the new credit limit (no credit at all)
    (r,) = charge_batch(priced, [usage("after-edit", acc)])
    priced.commit()
    assert (r.status, r.billed.format()) == ("charged", "0.0135")
    # the same values again change nothing; null puts the defaults back
    _, same = update_account(priced, acc.id, {"name": "Renamed", "credit_limit": "25.5"})
    assert same == {}
    _, reset = update_account(
        priced, acc.id, {"burn_order": None, "failed_request_policy_id": None}
    )
    assert set(reset) == {"burn_order", "failed_request_policy_id"}
    priced.commit()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "  "}, "name must not be empty"),
        ({"credit_limit": "-1"}, "must not be negative"),
        ({"failed_request_policy_id": "nope"}, "does not exist"),
        ({"burn_order": ["paid"]}, "exactly once"),
        ({"discounts": [{"model": None, "pct": "101"}]}, "0..100"),
        ({"status": "frozen"}, "status must be one of"),
    ],
)
def test_bad_values_are_refused_and_change_nothing(priced: Session, changes, message):
    acc = funded(priced, None)
    with pytest.raises(InvalidRequest, match=message):
        update_account(priced, acc.id, {"name": "Changed", **changes})
    priced.rollback()
    assert priced.get_one(Account, acc.id).name == "C"


def test_out_of_scope_accounts_are_not_found(priced: Session):
    acc = funded(priced, None)
    with pytest.raises(NotFound):
        update_account(priced, acc.id, {"name": "X"}, scope=Scope("self", "acc_other"))


def test_a_suspended_account_is_refused_usage_and_authorizations(priced: Session):
    acc = funded(priced, "10.00")
    before = grant(priced, account_id=acc.id, amount="1.00", ttl=TEN_MIN)
    priced.commit()
    update_account(priced, acc.id, {"status": "suspended"})
    priced.commit()

    (plain,) = charge_batch(priced, [usage("plain", acc)])
    priced.commit()
    assert (plain.status, plain.reason) == ("rejected", "account_suspended")
    assert "suspended" in (plain.detail or "")
    # a call made under the grant approved before the suspension still captures it
    (captured,) = charge_batch(priced, [usage("under-grant", acc, authorization_id=before.id)])
    priced.commit()
    assert (captured.status, captured.billed.format()) == ("charged", "0.015")

    single = hold(priced, acc)
    assert (single.status, single.decline_code) == ("declined", "account_suspended")
    g = grant(priced, account_id=acc.id, amount="1.00", ttl=TEN_MIN)
    priced.commit()
    assert (g.status, g.decline_code, g.granted_now) == ("declined", "account_suspended", 0)
    more = increment(priced, before.id, amount="1.00")
    priced.commit()
    assert (more.granted_now, more.decline_code, more.final) == (0, "account_suspended", True)
    void_authorization(priced, before.id)
    priced.commit()

    # reactivated: the refused record is charged when sent again
    update_account(priced, acc.id, {"status": "active"})
    priced.commit()
    (again,) = charge_batch(priced, [usage("plain", acc)])
    priced.commit()
    assert (again.status, again.billed.format()) == ("charged", "0.015")
    assert balance_of(priced, acc).paid.format() == "9.97"


def test_a_suspended_reseller_stops_its_sub_accounts(priced: Session):
    reseller = funded(priced, "10.00", kind="reseller")
    sub = funded(priced, "5.00", parent_id=reseller.id)
    update_account(priced, reseller.id, {"status": "suspended"})
    priced.commit()
    (r,) = charge_batch(priced, [usage("sub-1", sub)])
    priced.commit()
    assert (r.status, r.reason) == ("rejected", "account_suspended")
    assert f"reseller {reseller.id}" in (r.detail or "")


def test_closing_is_refused_while_anything_remains_and_is_final(priced: Session):
    acc = funded(priced, "10.00")
    g = grant(priced, account_id=acc.id, amount="1.00", ttl=TEN_MIN)
    priced.commit()
    with pytest.raises(AccountNotEmpty) as refused:
        update_account(priced, acc.id, {"status": "closed"})
    priced.rollback()
    assert refused.value.extra["remaining"] == [
        "paid credit",
        "1 open authorization(s) (void them or let them expire)",
    ]
    void_authorization(priced, g.id)
    topup_id = priced.scalar(
        sa.text("SELECT id FROM wallet_topups WHERE account_id = :a"),
        {"a": acc.id},
    )
    refund_topup(priced, topup_id)
    priced.commit()
    _, diff = update_account(priced, acc.id, {"status": "closed"})
    priced.commit()
    assert diff == {"status": {"before": "active", "after": "closed"}}
    with pytest.raises(AccountClosed):
        update_account(priced, acc.id, {"status": "active"})
    priced.rollback()
    (r,) = charge_batch(priced, [usage("after-close", acc)])
    priced.commit()
    assert (r.status, r.reason) == ("rejected", "account_closed")


def test_a_new_account_refuses_a_negative_low_balance_threshold(priced: Session):
    # the edit refused it; creation took it and then never alerted
    before = priced.scalar(sa.select(sa.func.count()).select_from(Account))
    with pytest.raises(InvalidRequest, match="low_balance_threshold must not be negative"):
        create_account(priced, name="N", currency="USD", low_balance_threshold="-5")
    priced.rollback()
    assert priced.scalar(sa.select(sa.func.count()).select_from(Account)) == before
