"""Credit note arithmetic: what is left of a line, its tax and bonus share, where it goes."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from invoicing.credits import (
    Credit,
    Creditable,
    bonus_share,
    check_credit_amount,
    credit_of,
    split_credit,
)
from invoicing.errors import CreditTooLarge
from ledger.amounts import Amount
from ledger.errors import InvalidAmount
from ledger.units import currency

USD = currency("USD")
CENT = USD.atoms_per_minor


def cents(n: int) -> int:
    return n * CENT


def taxed_line(**done: Credit) -> Creditable:
    """A 10.00 line, 6.00 of it taxable at 20 % (1.20 of tax) and 4.00 paid by bonus."""
    return Creditable(
        amount=cents(1000),
        taxable=cents(600),
        rate_pct=Decimal("20"),
        tax=cents(120),
        bonus=cents(400),
        **done,
    )


def test_crediting_the_rest_of_a_line_credits_its_remaining_tax_and_bonus():
    line = taxed_line(done=Credit(cents(300), cents(36), cents(120)))
    assert credit_of(line, None, USD, subject="line 1") == Credit(cents(700), cents(84), cents(280))


def test_a_partial_credit_takes_the_same_share_of_the_taxable_part_and_of_the_bonus():
    line = taxed_line()
    # 250 of 1000: 60% taxable -> 150 x 20% = 30; bonus 40% -> 100
    assert credit_of(line, cents(250), USD, subject="line 1") == Credit(
        cents(250), cents(30), cents(100)
    )


def test_an_untaxed_line_credits_no_tax():
    line = Creditable(amount=cents(500), taxable=0, rate_pct=None, tax=0)
    assert credit_of(line, cents(100), USD, subject="line 1") == Credit(cents(100), 0, 0)


def test_more_than_is_left_is_refused_with_what_is_creditable():
    part = Creditable(
        amount=cents(500), taxable=cents(500), rate_pct=None, tax=0, done=Credit(cents(400), 0)
    )
    with pytest.raises(CreditTooLarge) as err:
        credit_of(part, cents(200), USD, subject="invoice INV-1", noun=" of billed amounts")
    assert "invoice INV-1 has 1.00 USD of billed amounts left to credit" in str(err.value)
    with pytest.raises(CreditTooLarge):
        credit_of(
            Creditable(cents(5), cents(5), None, 0, done=Credit(cents(5), 0)),
            None,
            USD,
            subject="line 2",
        )


def test_credit_amounts_are_positive_whole_minor_units_of_the_invoice_currency():
    check_credit_amount(Amount.parse("1.00", USD), USD, "inv_1")
    for bad in (Amount.parse("0.001", USD), Amount(0, USD), Amount.parse("1", currency("EUR"))):
        with pytest.raises(InvalidAmount):
            check_credit_amount(bad, USD, "inv_1")


def test_bonus_share_is_the_exact_share_on_the_rounded_amount_rounded_down():
    assert bonus_share(cents(100), cents(100) + 3, cents(50)) == cents(50) - 2
    assert bonus_share(cents(100), 0, cents(50)) == 0
    assert bonus_share(cents(100), cents(100), 0) == 0
    assert bonus_share(cents(100), cents(100), cents(200)) == cents(100)


def test_billed_amounts_reduce_the_open_balance_first_the_rest_goes_back_to_the_wallet():
    split = split_credit(
        [
            ("due", Credit(cents(100), cents(20))),
            ("prepaid", Credit(cents(50), cents(10), cents(30))),
        ],
        open_balance=cents(100),
    )
    assert (split.net, split.tax, split.total) == (cents(150), cents(30), cents(180))
    assert split.to_receivable == cents(100)  # billed: 120 (due + its tax) + 10 (prepaid tax)
    assert (split.to_wallet, split.to_bonus, split.to_paid) == (cents(80), cents(30), cents(50))


atoms = st.integers(min_value=0, max_value=10**6).map(cents)


@st.composite
def lines(draw: st.DrawFn) -> Creditable:
    amount = draw(st.integers(min_value=1, max_value=10**6)) * CENT
    taxable = draw(st.integers(min_value=0, max_value=amount // CENT)) * CENT
    rate = draw(
        st.sampled_from([None, Decimal("0"), Decimal("7.5"), Decimal("20"), Decimal("100")])
    )
    tax = 0 if rate is None else (taxable * int(rate * 100) // 10000) // CENT * CENT
    bonus = draw(st.integers(min_value=0, max_value=amount - taxable))
    return Creditable(amount=amount, taxable=taxable, rate_pct=rate, tax=tax, bonus=bonus)


@given(lines(), st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=5))
def test_credits_of_a_line_never_exceed_it_and_the_last_one_completes_it(
    line: Creditable, wanted: list[int]
):
    done = Credit(0, 0, 0)
    for w in wanted:
        left = Creditable(line.amount, line.taxable, line.rate_pct, line.tax, line.bonus, done)
        if left.net_left == 0:
            break
        net = min(w * CENT, left.net_left)
        c = credit_of(left, net, USD, subject="line")
        assert (
            c.net == net
            and 0 <= c.tax <= left.tax_left
            and 0 <= c.bonus <= min(net, left.bonus_left)
        )
        done = Credit(done.net + c.net, done.tax + c.tax, done.bonus + c.bonus)
    rest = Creditable(line.amount, line.taxable, line.rate_pct, line.tax, line.bonus, done)
    if rest.net_left:
        c = credit_of(rest, None, USD, subject="line")
        done = Credit(done.net + c.net, done.tax + c.tax, done.bonus + c.bonus)
    assert (done.net, done.tax) == (line.amount, line.tax)
    assert done.bonus == min(line.bonus, line.amount)


@given(
    st.lists(
        st.tuples(st.sampled_from(["due", "prepaid"]), atoms, atoms, atoms), min_size=1, max_size=6
    ),
    atoms,
)
def test_a_credit_splits_exactly_between_receivable_paid_and_bonus(
    rows: list[tuple[str, int, int, int]], open_balance: int
):
    items = [(s, Credit(net, tax, min(bonus, net))) for s, net, tax, bonus in rows]
    split = split_credit(items, open_balance)
    assert split.total == split.net + split.tax
    assert split.to_receivable + split.to_bonus + split.to_paid == split.total
    assert 0 <= split.to_receivable <= open_balance
    billed = sum(c.net + c.tax if s == "due" else c.tax for s, c in items)
    assert split.to_receivable == min(billed, open_balance)
