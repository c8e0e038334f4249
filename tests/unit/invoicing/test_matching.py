"""Reconciliation matching: provider balance transactions against cash:stripe items."""

from __future__ import annotations

from datetime import UTC, date, datetime

from hypothesis import given
from hypothesis import strategies as st

from invoicing.payments.gateway import BalanceTransaction
from invoicing.payments.matching import LedgerItem, reconcile_currency
from ledger.units import currency

DAY = date(2026, 11, 3)
CENT = currency("USD").atoms_per_minor


def bt(id_: str, type_: str, amount: int, fee: int = 0, pi: str | None = None, cur: str = "USD"):
    return BalanceTransaction(
        id=id_,
        type=type_,
        currency=cur,
        amount_minor=amount,
        fee_minor=fee,
        net_minor=amount - fee,
        created_at=datetime(2026, 11, 3, tzinfo=UTC),
        source_id=None,
        payment_intent_id=pi,
    )


def test_a_day_that_matches_is_balanced_payouts_are_counted_apart():
    bts = [
        bt("b1", "charge", 1000, 30, "pi_1"),
        bt("b2", "payout", -5000),
        bt("b3", "charge", 1, 0, cur="EUR"),
    ]
    items = [LedgerItem(1, {"payment_intent_id": "pi_1"}, 970 * CENT)]
    report = reconcile_currency(DAY, "USD", [*bts[:2], bt("b4", "charge", 500, 0, None)], [], {})
    assert report.transactions == 2 and report.details["not_booked"] == {
        "payout": {"count": 1, "amount_minor": -5000}
    }
    report = reconcile_currency(DAY, "USD", [b for b in bts if b.currency == "USD"], items, {})
    assert report.balanced and report.details["mismatches"] == []
    assert report.provider_fees.atoms == 30 * CENT


def test_ledger_items_match_by_the_payment_intent_of_their_top_up():
    items = [LedgerItem(1, {"topup_id": "top_1"}, 1000 * CENT), LedgerItem(2, {}, 5 * CENT)]
    report = reconcile_currency(
        DAY, "USD", [bt("b1", "charge", 1000, 0, "pi_1")], items, {"top_1": "pi_1"}
    )
    assert [m["ref"] for m in report.details["mismatches"]] == ["entry:2"]
    assert report.difference.atoms == -5 * CENT


@given(
    st.lists(
        st.tuples(
            st.integers(-(10**6), 10**6),
            st.integers(0, 1000),
            st.sampled_from(["pi_1", "pi_2", None]),
        ),
        max_size=8,
    )
)
def test_the_provider_booked_exactly_is_balanced(rows: list[tuple[int, int, str | None]]):
    bts = [bt(f"b{i}", "charge", a, f, pi) for i, (a, f, pi) in enumerate(rows)]
    items = [
        LedgerItem(i, {"payment_intent_id": pi} if pi else {}, (a - f) * CENT)
        for i, (a, f, pi) in enumerate(rows)
    ]
    report = reconcile_currency(DAY, "USD", bts, items, {})
    assert report.balanced
    assert report.provider_net == report.ledger_net
