"""Billing periods: calendar months in UTC, named ``YYYY-MM`` (pure, no database)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from invoicing.errors import InvalidPeriod

_PERIOD_RE = re.compile(r"^([0-9]{4})-([0-9]{2})$")  # ASCII digits only (\d matches any script's)


@dataclass(frozen=True, slots=True, order=True)
class Period:
    """A calendar month in UTC: ``[start, end)``."""

    year: int
    month: int

    @classmethod
    def parse(cls, value: str) -> Period:
        """Parse ``"2026-11"``.

        Raises:
            InvalidPeriod: not ``YYYY-MM`` with a month 01..12.
        """
        m = _PERIOD_RE.match(value)
        if not m or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1970:
            raise InvalidPeriod(f"period must be YYYY-MM (e.g. 2026-11); got {value!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    @classmethod
    def containing(cls, at: datetime) -> Period:
        """The period an aware moment falls in (UTC)."""
        utc = at.astimezone(UTC)
        return cls(utc.year, utc.month)

    @property
    def start(self) -> datetime:
        """The first instant of the period (00:00 UTC on the 1st)."""
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant after the period."""
        return self.next().start

    def next(self) -> Period:
        """The following month."""
        return Period(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Period:
        """The month before."""
        return Period(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    def __str__(self) -> str:
        """``YYYY-MM``."""
        return f"{self.year:04d}-{self.month:02d}"
