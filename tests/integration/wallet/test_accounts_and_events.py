"""Account settings that change what usage costs, and the events usage and renewals emit."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from ledger.errors import DomainError
from tests.integration.wallet.conftest import funded, paid_cents, plan, usage
from wallet.accounts import create_account
from wallet.charging import charge_batch
from wallet.models import OutboxEvent, Subscription, Topup
from wallet.subscriptions import renew_due, start_subscription
from wallet.topups import record_topup


def test_standing_discounts_price_usage(priced: Session):
    acc = funded(priced, "1.00", discounts=[{"pct": "50"}])
    r = charge_batch(priced, [usage("d", acc)])
    priced.commit()
    assert r[0].billed.format() == "0.0075"  # half of 0.015


def test_account_settings_are_checked_when_the_account_is_created(priced: Session):
    with pytest.raises(DomainError, match="does not exist") as bad_policy:
        create_account(priced, name="C", currency="USD", failed_request_policy_id="nope")
    assert bad_policy.value.code == "validation_error"
    priced.rollback()
    with pytest.raises(DomainError) as bad_model:
        create_account(
            priced, name="C", currency="USD", discounts=[{"model": "ghost", "pct": "10"}]
        )
    assert bad_model.value.code == "unknown_model"


def test_usage_crossing_the_threshold_emits_balance_low_once(priced: Session):
    acc = funded(priced, "0.05", low_balance_threshold="0.03")
    for n in range(3):  # 0.05 -> 0.035 -> 0.02 (crosses 0.03) -> 0.005
        assert charge_batch(priced, [usage(f"u{n}", acc)])[0].status == "charged"
        priced.commit()
    events = priced.scalars(sa.select(OutboxEvent).where(OutboxEvent.type == "balance.low")).all()
    assert len(events) == 1
    assert events[0].payload["data"]["available"] == {"amount": "0.02", "currency": "USD"}


def test_a_past_due_plan_restarts_when_paid_without_charging_missed_months(priced: Session):
    plan(priced, limit=100, on_exhausted="wallet", fee="1.00")
    acc = funded(priced, "1.00")
    sub = start_subscription(priced, acc.id, "p")
    priced.commit()
    due = sub.current_period_end
    for days in (1, 20, 40):  # cannot pay: past_due, retried, one event only
        report = renew_due(priced, now=due + timedelta(days=days))
        priced.commit()
        assert report.failed == [sub.id]
    failed = priced.scalars(
        sa.select(OutboxEvent).where(OutboxEvent.type == "subscription.renewal_failed")
    ).all()
    assert len(failed) == 1
    record_topup(priced, acc.id, amount="5.00", method="bank_transfer")
    priced.commit()
    paid_at = due + timedelta(days=70)
    assert renew_due(priced, now=paid_at).renewed == [sub.id]
    priced.commit()
    s = priced.get_one(Subscription, sub.id)
    assert (s.status, s.current_period_start) == ("active", paid_at)
    assert paid_cents(priced, acc) == "4.00"  # one month paid, not three
    assert renew_due(priced, now=paid_at + timedelta(days=1)).renewed == []


def test_a_refund_takes_back_the_bonus_that_came_with_the_money(priced: Session):
    from datetime import UTC, datetime

    from plans import catalog
    from wallet.refunds import refund_topup

    catalog.create_topup_bonus_rule(
        priced,
        currency="USD",
        tiers=[{"min_amount": "100.00", "bonus_pct": "10"}],
        effective_from=datetime(2026, 1, 1, tzinfo=UTC),
    )
    priced.commit()
    acc = funded(priced, "100.00")  # + 10.00 bonus
    top = priced.scalars(sa.select(Topup).where(Topup.account_id == acc.id)).one()
    # 10.50 of usage: the 10.00 bonus burns first, then 0.50 of paid credit
    assert charge_batch(priced, [usage("big", acc, output_tokens=700_000)])[0].status == "charged"
    priced.commit()
    r = refund_topup(priced, top.id)  # all the unspent paid credit: 99.50
    priced.commit()
    # 99.50 of 100.00 returned takes back 9.95 of the 10.00 bonus; it was spent, so it is
    # kept from the payout: the customer paid 10.45 for 10.50 of usage (the bonus of the 0.50
    # it did spend stays with it)
    assert (r.refunded.format(), r.bonus_clawed_back.format()) == ("99.50", "9.95")
    assert r.withheld is not None and r.withheld.format() == "9.95"
    assert paid_cents(priced, acc) == "0.00"
