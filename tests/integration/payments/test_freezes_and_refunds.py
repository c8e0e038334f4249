"""Wallet freezes and card-refund rules, at the service level."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from invoicing.payments.accounts import card_ledger
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.units import currency
from wallet.balance import balance_of
from wallet.errors import InvalidRequest, RefundTooLarge
from wallet.freezes import freeze_topup_credit, release_freeze
from wallet.lots import expire_lots
from wallet.models import Account, CreditLot, Topup
from wallet.refunds import refund_topup, reverse_topup

USD = currency("USD")


def usd(value: str) -> Amount:
    return Amount.parse(value, USD)


def money(s, account_id):
    b = balance_of(s, s.get_one(Account, account_id))
    return b.paid.format(), b.bonus.format(), b.held.format(), b.available.format()


def test_freeze_is_idempotent_and_a_lapsed_bonus_lot_does_not_come_back(
    session_factory, card_topup, deliver, account_id
):
    _, topup_id, completed = card_topup("500.00", pi="pi_lapse")  # bonus 50, expires in 30 days
    deliver(completed)
    with session_factory.begin() as s:
        disputed = card_ledger(s, USD).disputed.id
        f1 = freeze_topup_credit(
            s, topup_id, usd("100.00"), key="dispute:x", forfeit_to_account_id=disputed
        )
        f2 = freeze_topup_credit(
            s, topup_id, usd("400.00"), key="dispute:x", forfeit_to_account_id=disputed
        )
        assert f1.id == f2.id and (f1.frozen_paid, f1.frozen_bonus) == (100 * 10**18, 10 * 10**18)
        assert money(s, account_id) == ("500.00", "50.00", "110.00", "440.00")
        freeze_id = f1.id
    # The bonus lot expires while 10.00 of it is frozen: the 40.00 unfrozen part lapses now...
    with session_factory.begin() as s:
        bonus_lot = s.scalars(
            select(CreditLot).where(CreditLot.source_id == topup_id, CreditLot.kind == "bonus")
        ).one()
        assert bonus_lot.expires_at is not None
        expire_lots(s, now=bonus_lot.expires_at + timedelta(seconds=1))
        assert money(s, account_id) == ("500.00", "10.00", "110.00", "400.00")
    # ...and the frozen 10.00 lapses when the freeze is released, instead of coming back.
    with session_factory.begin() as s:
        release_freeze(s, freeze_id, at=utcnow())
        assert money(s, account_id) == ("500.00", "0.00", "0.00", "500.00")
        assert release_freeze(s, freeze_id).status == "released"  # repeat-safe


def test_reverse_topup_rules(session_factory, card_topup, deliver, account_id):
    _, topup_id, completed = card_topup("100.00", pi="pi_rules")  # bonus 5.00
    deliver(completed)
    with session_factory.begin() as s:
        with pytest.raises(InvalidRequest, match="paid by card"):
            refund_topup(s, topup_id, amount="10.00")  # not behind Stripe's back
        with pytest.raises(RefundTooLarge):
            reverse_topup(s, topup_id, usd("100.01"))
        r = reverse_topup(s, topup_id, usd("100.01"), on_excess="receivable")
        assert (r.refunded, r.bonus_clawed_back, r.receivable) == (
            usd("100.00"),
            usd("5.00"),
            usd("0.01"),
        )
        assert s.get_one(Topup, topup_id).refunded == usd("100.01").atoms
        # the 0.01 owed uses the (zero) credit limit until an invoice bills it
        assert money(s, account_id) == ("0.00", "0.00", "0.00", "-0.01")
