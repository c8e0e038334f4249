"""The rating watermark and the catalog lock of a currency.

``rating_watermarks`` holds, per currency, the latest usage instant already priced
(:func:`advance_priced_through`, called by the usage path) and the catalog version (moved by
every rate card, contract or reseller price book, in its own transaction). A catalog change
must take effect strictly *after* the mark (:func:`refuse_backdated`), so it never reprices
usage that was already priced; corrections to history are credit notes, not new prices.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from ledger.base import utcnow
from ledger.units import Unit
from plans._db import check_aware, money_unit
from plans.catalog_errors import BackdatedPriceChange
from plans.models import RatingWatermark


def priced_through(session: Session, currency: Unit | str) -> datetime | None:
    """The latest usage instant already priced in ``currency`` (``None``: nothing yet)."""
    unit = money_unit(currency)
    return session.scalar(
        select(RatingWatermark.priced_through_at).where(RatingWatermark.currency == unit.code)
    )


#: The catalog lock of a currency: pricing batches take it shared for their whole
#: transaction, catalog changes exclusively (``tw_lock_key`` is defined by migration 0009).
_CATALOG_SHARED = text("SELECT pg_advisory_xact_lock_shared(tw_lock_key('catalog', :c))")
_CATALOG_EXCLUSIVE = text("SELECT pg_advisory_xact_lock(tw_lock_key('catalog', :c))")


def advance_priced_through(session: Session, currency: Unit | str, at: datetime) -> datetime:
    """Record that usage in ``currency`` up to ``at`` is being priced (monotonic).

    A pricing batch takes the currency's catalog lock *shared* (until its transaction ends),
    then moves the mark when it prices later usage than it shows. A catalog change takes the
    same lock *exclusively* before it reads the mark (:func:`refuse_backdated`), so it either
    commits before the batch (and the batch sees it) or waits for the batch and is then refused
    if it would take effect at or before the mark. Batches never block each other; only the one
    that moves the mark writes its row. The gateway path does the same in its own statements
    (``wallet/snapshot.py``, ``wallet/writeback.py``).

    Args:
        session: the caller's session (not committed here).
        currency: the currency priced.
        at: aware instant; the mark never goes backwards.

    Returns:
        The watermark after the call (``max(previous, at)``).
    """
    unit = money_unit(currency)
    at = check_aware(at, what="priced_through_at")
    session.execute(_CATALOG_SHARED, {"c": unit.code})
    current = session.scalar(
        select(RatingWatermark.priced_through_at).where(RatingWatermark.currency == unit.code)
    )
    if current is not None and current >= at:
        return current
    now = utcnow()
    insert = pg_insert(RatingWatermark).values(
        currency=unit.code, priced_through_at=at, updated_at=now
    )
    upsert = insert.on_conflict_do_update(
        index_elements=[RatingWatermark.currency],
        set_={
            "priced_through_at": func.greatest(
                RatingWatermark.priced_through_at, insert.excluded.priced_through_at
            ),
            "updated_at": insert.excluded.updated_at,
        },
    ).returning(RatingWatermark.priced_through_at)
    mark: datetime | None = session.execute(upsert).scalar_one()
    assert mark is not None
    return mark


def _lock_watermark(session: Session, unit: Unit) -> datetime | None:
    """Lock the currency's catalog exclusively, bump its version and return the mark.

    The lock waits for the pricing batches in flight and keeps new ones out until this
    transaction ends; the version moves because a price is about to change.
    """
    session.execute(_CATALOG_EXCLUSIVE, {"c": unit.code})
    session.execute(
        pg_insert(RatingWatermark)
        .values(currency=unit.code, priced_through_at=None, updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=[RatingWatermark.currency])
    )
    mark = session.scalar(
        select(RatingWatermark.priced_through_at)
        .where(RatingWatermark.currency == unit.code)
        .with_for_update()
    )
    # a sequence, not +1: a version number used by a transaction that rolls back is never
    # reused, so a process that cached what that transaction saw can never mistake it for
    # another transaction's catalog
    session.execute(
        update(RatingWatermark)
        .where(RatingWatermark.currency == unit.code)
        .values(catalog_version=func.nextval("catalog_versions"))
    )
    return mark


def catalog_version(session: Session, currency: Unit | str) -> int:
    """The currency's catalog version (0 before the first change).

    It changes with every rate card, contract or reseller price book, in that change's
    transaction.
    """
    unit = money_unit(currency)
    version = session.scalar(
        select(RatingWatermark.catalog_version).where(RatingWatermark.currency == unit.code)
    )
    return int(version or 0)


def refuse_backdated(session: Session, unit: Unit, start: datetime, what: str) -> None:
    """Refuse a change that would take effect at or before the usage already priced.

    Takes the currency's catalog lock and bumps its version first (:func:`_lock_watermark`).

    Args:
        session: the caller's session (the lock is held until its transaction ends).
        unit: the currency of the change.
        start: the instant the change takes effect.
        what: the change, for the message (``"rate card for USD"``).

    Raises:
        BackdatedPriceChange: ``start`` is not after the watermark.
    """
    mark = _lock_watermark(session, unit)
    if mark is not None and start <= mark:
        raise BackdatedPriceChange(
            f"{what} would take effect at {start.isoformat()}, but {unit.code} usage is "
            f"already priced through {mark.isoformat()}; choose a time after "
            f"{mark.isoformat()} (history is corrected with credit notes, not new prices)",
            priced_through_at=mark.isoformat(),
        )
