from datetime import UTC, datetime, timedelta

import pytest

from wallet.burn_order import DEFAULT_BURN_ORDER, validate_burn_order
from wallet.errors import InvalidRequest
from wallet.quota import add_months, window_bounds

T0 = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)


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
