"""Finance report rules: rollforward lines, aging buckets, margin percentages."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from invoicing.reports.rules import BUCKETS, aging_bucket, classify_movement, pct


def test_aging_buckets_by_days_past_due():
    assert [aging_bucket(d) for d in (-5, 0, 1, 30, 31, 60, 61, 90, 91)] == [
        "current",
        "current",
        "1-30",
        "1-30",
        "31-60",
        "31-60",
        "61-90",
        "61-90",
        "90+",
    ]


@given(st.integers(min_value=-1000, max_value=1000), st.integers(min_value=0, max_value=1000))
def test_aging_buckets_never_go_back_as_days_pass(days: int, later: int):
    assert BUCKETS.index(aging_bucket(days)) <= BUCKETS.index(aging_bucket(days + later))


def test_movements_are_classified_by_the_entry_s_other_accounts():
    assert classify_movement("customer:prepaid", None, ["cash:stripe"], 1) == "purchased"
    assert classify_movement("customer:bonus", None, ["cash:stripe"], 1) == "bonus_granted"
    assert classify_movement("customer:prepaid", None, ["cash:stripe"], -1) == "refunded"
    assert classify_movement("customer:prepaid", "credit_note", [], 1) == "credited"
    assert classify_movement("customer:prepaid", None, ["revenue:usage"], -1) == "consumed"
    assert classify_movement("customer:bonus", None, ["promotions"], -1) == "expired"
    assert classify_movement("customer:prepaid", None, ["revenue:breakage"], -1) == "expired"
    assert classify_movement("customer:prepaid", None, ["revenue:sla"], 1) == "other"


def test_percentages_have_two_decimals_half_even_and_none_without_a_whole():
    assert pct(1, 3) == "33.33" and pct(1, 8) == "12.50" and pct(5, 0) is None
    assert pct(1, 800) == "0.12"  # 0.125 -> even
