"""Housekeeping of the usage tables.

Monthly partitions ahead of time, and forgetting record ids once no record that old can be accepted
any more.

Exactly-once holds for as long as a record id is remembered. Usage older than the retention
window (``occurred_at`` before ``now - retention``) is refused by the charging path, and a
claim is kept one day longer than that window, so every record that can still be accepted is
checked against every claim that could match it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from ledger.base import utcnow

#: Default retention of usage record ids: the open billing period (up to 31 days) plus 35 days,
#: rounded up.
DEFAULT_RETENTION = timedelta(days=70)
#: Claims outlive the acceptance window by this margin.
CLAIM_MARGIN = timedelta(days=1)
#: Monthly partitions kept ready ahead of the current month.
MONTHS_AHEAD = 3


def ensure_usage_partitions(
    session: Session, *, retention: timedelta = DEFAULT_RETENTION, now: datetime | None = None
) -> int:
    """Create the missing monthly partitions of ``wallet_usage_records``; returns how many.

    They run from the oldest month still accepted up to ``MONTHS_AHEAD`` months ahead.
    """
    at = now or utcnow()
    first = (at - retention).date().replace(day=1)
    months = (at.year - first.year) * 12 + at.month - first.month + 1 + MONTHS_AHEAD
    made = session.scalar(
        text("SELECT wallet_ensure_usage_partitions(:first, :months)"),
        {"first": first, "months": months},
    )
    return int(made or 0)


def purge_usage_claims(
    session: Session,
    *,
    retention: timedelta = DEFAULT_RETENTION,
    now: datetime | None = None,
    limit: int = 50_000,
) -> int:
    """Forget up to ``limit`` record ids claimed before ``now - retention - CLAIM_MARGIN``.

    The usage records themselves are kept; only the dedupe claims go. Returns the number purged.
    """
    before = (now or utcnow()) - retention - CLAIM_MARGIN
    result = session.execute(
        text(
            "DELETE FROM wallet_usage_claims WHERE id IN ("
            " SELECT id FROM wallet_usage_claims WHERE claimed_at < :before"
            " ORDER BY claimed_at LIMIT :limit FOR UPDATE SKIP LOCKED)"
        ),
        {"before": before, "limit": limit},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def usage_of_models(
    session: Session, currency: str, models: Sequence[str], since: datetime
) -> dict[str, int]:
    """How many usage records in ``currency`` each model has since ``since``.

    A catalog change that would stop pricing a model asks; only the partitions since then are read.
    """
    rows = session.execute(
        text(
            "SELECT model, count(*) FROM wallet_usage_records"
            " WHERE currency = :c AND model = ANY(:m) AND occurred_at >= :since GROUP BY model"
        ),
        {"c": currency, "m": list(models), "since": since},
    ).all()
    return {str(model): int(n) for model, n in rows}
