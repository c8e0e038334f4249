from datetime import UTC, datetime, timedelta

import pytest

from wallet.burn import DEFAULT_BURN_ORDER, LotView, allocate, validate_burn_order
from wallet.errors import InvalidRequest
from wallet.quota import add_months, window_bounds

T0 = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)


def lot(i, kind, remaining, days=None, priority=0, models=()):
    exp = T0 + timedelta(days=days) if days is not None else None
    return LotView(i, kind, remaining, exp, priority, tuple(models))


def test_default_order_bonus_before_paid_earliest_expiry_first():
    lots = [lot(1, "paid", 100), lot(2, "bonus", 10, days=30), lot(3, "bonus", 10, days=5)]
    allocs, short = allocate(lots, 25)
    assert short == 0
    assert [(a.lot_id, a.atoms) for a in allocs] == [(3, 10), (2, 10), (1, 5)]


def test_custom_order_and_shortfall_and_expired_lots_skipped():
    order = validate_burn_order(["plan", "package", "paid", "bonus", "overage"])
    lots = [lot(1, "paid", 5), lot(2, "bonus", 10, days=-1), lot(3, "bonus", 3, days=2)]
    allocs, short = allocate(lots, 10, order=order, at=T0)
    assert [(a.lot_id, a.atoms) for a in allocs] == [(1, 5), (3, 3)]
    assert short == 2


def test_priority_beats_expiry_and_package_scope():
    lots = [
        lot(1, "package", 50, days=1, models=("m-a",)),
        lot(2, "package", 50, days=9, priority=5),
    ]
    allocs, _ = allocate(lots, 60, kinds=frozenset({"package"}), model="m-b")
    assert [(a.lot_id, a.atoms) for a in allocs] == [(2, 50)]


def test_burn_order_validation():
    assert validate_burn_order(None) == DEFAULT_BURN_ORDER
    with pytest.raises(InvalidRequest):
        validate_burn_order(["paid", "bonus"])


def test_window_bounds():
    assert window_bounds("monthly", T0) == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 12, 1, tzinfo=UTC),
    )
    start, end = window_bounds("weekly", T0)  # 2026-11-22 is a Sunday
    assert start == datetime(2026, 11, 16, tzinfo=UTC) and end == datetime(2026, 11, 23, tzinfo=UTC)
    assert window_bounds("rolling_5h", T0) == (T0, T0 + timedelta(hours=5))
    assert add_months(datetime(2026, 1, 31, tzinfo=UTC)) == datetime(2026, 2, 28, tzinfo=UTC)
    assert add_months(datetime(2026, 12, 15, tzinfo=UTC)) == datetime(2027, 1, 15, tzinfo=UTC)
