"""Card payment rules: dispute stages and how much of an invoice a dispute holds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from invoicing.payments.rules import dispute_stage, funds_moved, invoice_dispute_share


def test_a_dispute_is_open_until_won_or_lost():
    assert [
        dispute_stage(s) for s in ("needs_response", "under_review", "warning_needs_response")
    ] == ["open"] * 3
    assert dispute_stage("won") == dispute_stage("warning_closed") == "won"
    assert dispute_stage("lost") == "lost"


def test_withdrawn_funds_move_to_the_disputed_account_reinstated_ones_back():
    assert funds_moved(-1500) == 1500 and funds_moved(1500) == -1500 and funds_moved(0) == 0


def test_a_dispute_holds_of_an_invoice_what_the_frozen_credit_does_not_cover():
    assert invoice_dispute_share(1000, 300, 5000) == 700
    assert invoice_dispute_share(1000, 300, 500) == 500
    assert invoice_dispute_share(1000, 1200, 500) == 0


amounts = st.integers(min_value=0, max_value=10**12)


@given(amounts, amounts, amounts)
def test_the_invoice_share_and_the_frozen_credit_never_cover_more_than_the_dispute(
    disputed: int, frozen: int, on_invoice: int
):
    share = invoice_dispute_share(disputed, frozen, on_invoice)
    assert 0 <= share <= on_invoice
    assert share + min(frozen, disputed) <= disputed


def test_finance_refunds_what_it_asks_or_everything_refundable_never_more():
    from invoicing.payments.rules import refund_amount
    from ledger.amounts import Amount
    from ledger.units import currency
    from wallet.errors import RefundTooLarge

    usd = currency("USD")
    ten, five = Amount.parse("10", usd), Amount.parse("5", usd)
    assert refund_amount(None, ten, "why") == ten
    assert refund_amount(five, ten, "why") == five
    with pytest.raises(RefundTooLarge, match="the customer spent the rest"):
        refund_amount(ten, five, "why")
    with pytest.raises(RefundTooLarge, match="nothing left to refund"):
        refund_amount(None, Amount(0, usd), "why")
