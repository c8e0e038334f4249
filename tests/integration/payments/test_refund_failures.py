"""Card refunds that fail at Stripe after we booked them are undone exactly once.

Stripe says so by ``refund.failed`` or ``charge.refund.updated`` with status ``failed``: credit
is restored with its bonus, debts cancelled, cash corrected, an operator event queued; stale
snapshots of the refunded total that still count the failed refund change nothing.
"""

from __future__ import annotations

from sqlalchemy import select

from invoicing.payments.accounts import card_ledger
from invoicing.payments.models import Payment, PaymentRefund
from ledger.accounts import get_balance
from ledger.units import currency
from plans.catalog import create_package
from tests.books import assert_books_tie
from tests.stripe_fakes import T0, charge_obj, event, refund_obj
from wallet.balance import balance_of
from wallet.ledger_accounts import reversal_receivable
from wallet.models import Account, CreditLot, OutboxEvent
from wallet.packages import buy_package

USD = currency("USD")


def money(s, account_id):
    b = balance_of(s, s.get_one(Account, account_id))
    return b.paid.format(), b.bonus.format()


def cash_stripe(s):
    return get_balance(s, card_ledger(s, USD).cash.id).posted.format()


def owed(s, account_id):
    acc = reversal_receivable(s, s.get_one(Account, account_id))
    return get_balance(s, acc.id).posted.format()


def refunded_event(ch, pi, *, amount, refunded, created):
    return event(
        "charge.refunded",
        charge_obj(ch, pi, amount=amount, amount_refunded=refunded),
        created=created,
    )


def failed(etype, re, ch, pi, *, amount, created_refund, created):
    obj = refund_obj(
        re,
        ch,
        pi,
        amount=amount,
        status="failed",
        created=created_refund,
        failure_reason="expired_or_canceled_card",
    )
    return event(etype, obj, created=created)


def _re_f1_failed(etype: str, *, created: int) -> dict:
    """Refund re_f1 (200.00 of charge ch_f1) reported failed by an event of ``etype``."""
    return failed(
        etype,
        "re_f1",
        "ch_f1",
        "pi_fail_1",
        amount=20000,
        created_refund=T0 + 3600,
        created=created,
    )


def _assert_one_refund_failed_notice(s, payment_id: str) -> None:
    """One operator event payment.refund_failed, saying what came back."""
    (notice,) = s.scalars(
        select(OutboxEvent).where(OutboxEvent.type == "payment.refund_failed")
    ).all()
    data = notice.payload["data"]
    assert data["refund_id"] == "re_f1" and data["payment_id"] == payment_id
    assert data["amount"] == {"amount": "200.00", "currency": "USD"}
    assert data["restored"]["paid"] == "200.00" and data["restored"]["bonus"] == "20.00"
    assert data["failure_reason"] == "expired_or_canceled_card"


def test_a_failed_refund_restores_paid_and_bonus_credit_and_cash_once(
    session_factory, card_topup, deliver, account_id
):
    payment_id, topup_id, completed = card_topup("500.00", pi="pi_fail_1")  # bonus 50, 30 days
    deliver(completed)
    with session_factory() as s:
        bonus_lot = s.scalars(
            select(CreditLot).where(CreditLot.source_id == topup_id, CreditLot.kind == "bonus")
        ).one()
        expires_at = bonus_lot.expires_at
    deliver(refunded_event("ch_f1", "pi_fail_1", amount=50000, refunded=20000, created=T0 + 3600))
    with session_factory() as s:
        assert money(s, account_id) == ("300.00", "30.00")
        assert cash_stripe(s) == "300.00"

    result = deliver(_re_f1_failed("refund.failed", created=T0 + 7200))
    assert result.status == "processed" and "200.00 USD undone" in result.outcome, result.outcome
    with session_factory() as s:
        assert money(s, account_id) == ("500.00", "50.00")
        assert cash_stripe(s) == "500.00"
        lot = s.get_one(CreditLot, bonus_lot.id)
        assert (lot.remaining, lot.expires_at) == (50 * 10**18, expires_at)  # its own expiry
        payment = s.get_one(Payment, payment_id)
        assert payment.refunded_minor == 0
        refund = s.get_one(PaymentRefund, "re_f1")
        assert (refund.status, refund.undone_minor) == ("failed", 20000)
        _assert_one_refund_failed_notice(s, payment_id)

    # the same failure again (Stripe also sends charge.refund.updated): nothing more
    again = deliver(_re_f1_failed("charge.refund.updated", created=T0 + 7201))
    assert "already undone" in again.outcome
    # and an old snapshot of the charge that still counted the refund changes nothing
    deliver(refunded_event("ch_f1", "pi_fail_1", amount=50000, refunded=20000, created=T0 + 3700))
    with session_factory() as s:
        assert money(s, account_id) == ("500.00", "50.00")
        assert cash_stripe(s) == "500.00"
        assert (
            s.scalar(
                select(OutboxEvent.id).where(OutboxEvent.type == "payment.refund_failed").limit(2)
            )
            is not None
        )
        assert_books_tie(s, at=[payment.created_at])


def test_a_failed_refund_of_spent_credit_cancels_the_debt_it_booked(
    session_factory, in_tx, card_topup, deliver, account_id
):
    in_tx(
        lambda s: create_package(
            s, id="pk-80", name="Eighty", currency="USD", price="80.00", tokens=100, valid_days=30
        )
    )
    _, _, completed = card_topup("100.00", pi="pi_fail_2")  # bonus 5.00
    deliver(completed)
    in_tx(lambda s: buy_package(s, account_id, "pk-80"))  # bonus 5 + paid 75
    with session_factory() as s:
        assert money(s, account_id) == ("25.00", "0.00")
    # Stripe refunds everything: 25 of unspent credit; 75 and the spent bonus 5 are owed
    deliver(refunded_event("ch_f2", "pi_fail_2", amount=10000, refunded=10000, created=T0 + 3600))
    with session_factory() as s:
        assert money(s, account_id) == ("0.00", "0.00")
        assert owed(s, account_id) == "80.00"
        assert cash_stripe(s) == "0.00"
    deliver(
        failed(
            "charge.refund.updated",
            "re_f2",
            "ch_f2",
            "pi_fail_2",
            amount=10000,
            created_refund=T0 + 3600,
            created=T0 + 7200,
        )
    )
    with session_factory() as s:
        assert money(s, account_id) == ("25.00", "0.00")  # as before the refund
        assert owed(s, account_id) == "0.00"
        assert cash_stripe(s) == "100.00"
        assert_books_tie(s)


def test_when_an_earlier_of_two_refunds_fails_only_the_later_one_stays(
    session_factory, card_topup, deliver, account_id
):
    _, _, completed = card_topup("500.00", pi="pi_fail_3")  # bonus 50
    deliver(completed)
    deliver(refunded_event("ch_f3", "pi_fail_3", amount=50000, refunded=10000, created=T0 + 3600))
    deliver(refunded_event("ch_f3", "pi_fail_3", amount=50000, refunded=15000, created=T0 + 3700))
    with session_factory() as s:
        assert money(s, account_id) == ("350.00", "35.00")
    deliver(
        failed(
            "refund.updated",
            "re_a",
            "ch_f3",
            "pi_fail_3",
            amount=10000,
            created_refund=T0 + 3600,
            created=T0 + 7200,
        )
    )
    with session_factory() as s:
        # only the 50.00 refund stands: 450 paid, 45 bonus (50 x 50/500 clawed back)
        assert money(s, account_id) == ("450.00", "45.00")
        assert cash_stripe(s) == "450.00"
    # a snapshot taken before the failure (it counts the failed refund) changes nothing...
    deliver(refunded_event("ch_f3", "pi_fail_3", amount=50000, refunded=15000, created=T0 + 3800))
    # ...and a new refund after it is applied from the lower total
    deliver(refunded_event("ch_f3", "pi_fail_3", amount=50000, refunded=10000, created=T0 + 9000))
    with session_factory() as s:
        assert money(s, account_id) == ("400.00", "40.00")
        assert cash_stripe(s) == "400.00"
        assert_books_tie(s)
