"""How refunds, their undoing and credit freezes split a top-up's money (no database)."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from wallet.clawbacks import RefundSplit, TopupSoFar, freeze_shares, split_refund, split_undo

atoms = st.integers(min_value=0, max_value=10**9)


def test_a_refund_within_the_unspent_credit_takes_back_its_share_of_unspent_bonus():
    topup = TopupSoFar(amount=100, bonus=10, refunded=0, bonus_clawed_back=0)
    split = split_refund(40, topup, unspent=100, bonus_left=10, bonus_frozen=0, withhold=True)
    assert split == RefundSplit(40, 40, 0, 4, 0, 0)
    assert split.legs() == [("prepaid", 40), ("cash", -40), ("bonus", 4), ("promotions", -4)]


def test_spent_bonus_is_withheld_from_a_payout_and_owed_when_the_money_has_left():
    topup = TopupSoFar(amount=100, bonus=10, refunded=0, bonus_clawed_back=0)
    # 8 of the 10 bonus spent: refunding everything takes 2 from the lot, 8 spent
    kept = split_refund(100, topup, unspent=100, bonus_left=2, bonus_frozen=0, withhold=True)
    assert (kept.bonus_from_lot, kept.withheld, kept.bonus_owed, kept.receivable) == (2, 8, 0, 0)
    owed = split_refund(100, topup, unspent=100, bonus_left=2, bonus_frozen=0, withhold=False)
    assert (owed.bonus_from_lot, owed.withheld, owed.bonus_owed, owed.receivable) == (2, 0, 8, 8)


def test_an_expired_bonus_lot_is_not_charged_for_and_excess_is_owed():
    topup = TopupSoFar(amount=100, bonus=10, refunded=0, bonus_clawed_back=0)
    split = split_refund(130, topup, unspent=100, bonus_left=None, bonus_frozen=0, withhold=False)
    assert split == RefundSplit(130, 100, 30, 0, 0, 0)
    assert split.legs()[-2:] == [("reversals", 30), ("cash", -30)]


def test_the_clawback_is_cumulative_and_rounds_down_in_the_customers_favour():
    first = TopupSoFar(amount=3, bonus=1, refunded=0, bonus_clawed_back=0)
    assert first.bonus_due(1) == 0 and first.bonus_due(2) == 0 and first.bonus_due(3) == 1
    after_two = TopupSoFar(amount=3, bonus=1, refunded=2, bonus_clawed_back=0)
    assert after_two.bonus_due(1) == 1


def test_parts_of_an_old_refund_entry_are_read_from_its_postings():
    split = RefundSplit(130, 100, 30, 4, 6, 0)
    totals = {"prepaid": 0, "cash": 0, "bonus": 0, "reversals": 0, "promotions": 0}
    for role, amount in split.legs():
        totals[role] += amount
    del totals["promotions"]
    assert RefundSplit.from_postings(**totals) == split
    assert RefundSplit.from_atoms(split.atoms()) == split


def test_a_freeze_takes_the_same_share_of_bonus_and_all_of_it_with_all_the_paid_credit():
    assert freeze_shares(30, paid_left=100, bonus_left=10) == (30, 3)
    assert freeze_shares(300, paid_left=100, bonus_left=10) == (100, 10)
    assert freeze_shares(30, paid_left=0, bonus_left=10) == (0, 10)
    assert freeze_shares(30, paid_left=100, bonus_left=0) == (30, 0)


@st.composite
def refunds(draw):
    amount = draw(st.integers(min_value=1, max_value=10**9))
    bonus = draw(atoms)
    refunded = draw(st.integers(min_value=0, max_value=amount))
    clawed = bonus * refunded // amount
    spent_paid = draw(st.integers(min_value=0, max_value=amount - refunded))
    bonus_spent = draw(st.integers(min_value=0, max_value=bonus - clawed))
    frozen = draw(st.integers(min_value=0, max_value=bonus - clawed - bonus_spent))
    live = draw(st.booleans())
    topup = TopupSoFar(amount, bonus, refunded, clawed)
    left = bonus - clawed - bonus_spent - frozen
    terms = {
        "unspent": amount - refunded - spent_paid,
        "bonus_left": left if live else None,
        "bonus_frozen": frozen,
        "withhold": draw(st.booleans()),
    }
    return draw(st.integers(min_value=1, max_value=2 * amount)), topup, terms


@given(refunds())
def test_a_refund_splits_exactly_and_never_claws_back_more_than_its_share(case):
    amount, topup, terms = case
    split = split_refund(amount, topup, **terms)
    unspent, bonus_left, withhold = terms["unspent"], terms["bonus_left"], terms["withhold"]
    assert split.refunded + split.excess == amount
    assert 0 <= split.refunded <= unspent and split.excess >= 0
    assert 0 <= split.withheld <= split.refunded and split.bonus_owed >= 0
    assert withhold or split.withheld == 0
    assert 0 <= split.bonus_from_lot <= (bonus_left or 0)
    assert split.bonus_clawed_back <= topup.bonus_due(amount)
    assert bonus_left is not None or split.bonus_clawed_back == 0
    assert sum(atoms for _, atoms in split.legs()) == 0
    assert all(atoms for _, atoms in split.legs())


@given(refunds(), atoms, st.booleans())
def test_undoing_a_refund_balances_and_gives_back_what_it_took(case, held, live):
    amount, topup, terms = case
    split = split_refund(amount, topup, **terms)
    undo = split_undo(split, bonus_lot_live=live, reversals_held=held)
    assert sum(atoms for _, atoms in undo.legs()) == 0
    assert undo.cash_back == split.refunded - split.withheld + split.excess
    assert undo.debt_cancelled + undo.extra_paid == split.receivable
    assert undo.debt_cancelled <= held
    assert undo.bonus_back == (split.bonus_from_lot if live else 0)


@given(st.integers(min_value=1, max_value=10**9), atoms, atoms)
def test_a_freeze_takes_at_most_what_is_left_in_proportion(amount, paid_left, bonus_left):
    paid, bonus = freeze_shares(amount, paid_left=paid_left, bonus_left=bonus_left)
    assert paid == min(amount, paid_left)
    assert 0 <= bonus <= bonus_left
    assume(0 < paid < paid_left)
    assert bonus * paid_left <= bonus_left * paid < (bonus + 1) * paid_left
