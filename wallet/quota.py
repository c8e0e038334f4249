"""Plan quota windows: when a window starts and resets, pure functions (no database).

* ``monthly``: the calendar month in UTC; resets at 00:00 UTC on the 1st.
* ``weekly``: the ISO week in UTC; resets Monday 00:00 UTC.
* ``rolling_5h``: a 5-hour window that opens with the first request after the previous one
  closed (the way coding plans meter sessions); resets 5 hours after it opened. While no window
  is open, nothing is used and there is nothing to reset.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

WINDOW_KINDS = ("rolling_5h", "weekly", "monthly")
ROLLING = timedelta(hours=5)


def add_months(at: datetime, months: int = 1) -> datetime:
    """The same day-of-month ``months`` later, clamped to the month's end (Jan 31 → Feb 28)."""
    month_index = at.month - 1 + months
    year, month = at.year + month_index // 12, month_index % 12 + 1
    day = min(at.day, calendar.monthrange(year, month)[1])
    return at.replace(year=year, month=month, day=day)


def window_bounds(kind: str, at: datetime) -> tuple[datetime, datetime]:
    """The window of ``kind`` that a request at ``at`` opens (or falls in)."""
    at = at.astimezone(UTC)
    if kind == "monthly":
        start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return start, add_months(start)
    if kind == "weekly":
        day = at.replace(hour=0, minute=0, second=0, microsecond=0)
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if kind == "rolling_5h":
        return at, at + ROLLING
    raise ValueError(f"unknown window kind {kind}")
