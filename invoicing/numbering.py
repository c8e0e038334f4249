"""Gapless document numbers: one counter row per series, taken in the finalizing transaction.

``INV-USD-2026-000001``: kind, currency, year of issue (UTC), sequence. The counter is
incremented with ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``, which row-locks the series
until the transaction ends: a concurrent finalizer of the same series waits, and a rollback
(a crash, an error after numbering) gives the number back. Numbers are therefore consecutive
in commit order with no gap and no duplicate. Callers number as the last step before commit,
so the lock is held briefly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import text
from sqlalchemy.orm import Session

DocumentKind = Literal["INV", "CN"]

_NEXT = text(
    "INSERT INTO invoicing_number_series (series, last_value) VALUES (:s, 1)"
    " ON CONFLICT (series) DO UPDATE"
    " SET last_value = invoicing_number_series.last_value + 1"
    " RETURNING last_value"
)


@dataclass(frozen=True, slots=True)
class DocumentNumber:
    """A number taken from a series."""

    series: str
    sequence: int

    @property
    def text(self) -> str:
        """``INV-USD-2026-000042``."""
        return f"{self.series}-{self.sequence:06d}"


def series_of(kind: DocumentKind, currency: str, issued_at: datetime) -> str:
    """The series a document issued at ``issued_at`` belongs to (per kind, currency and year)."""
    return f"{kind}-{currency}-{issued_at.astimezone(UTC).year:04d}"


def next_number(
    session: Session, kind: DocumentKind, currency: str, issued_at: datetime
) -> DocumentNumber:
    """Take the next number of the series (locks the series row until the caller commits)."""
    series = series_of(kind, currency, issued_at)
    value = session.execute(_NEXT, {"s": series}).scalar_one()
    return DocumentNumber(series, int(value))
