"""Holds (two-phase transfers: pending, then posted, voided or expired) and reversals.

Lock order: the hold entry first, then ledger accounts by id (:func:`ledger.journal.post_entries`
locks them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from ledger.amounts import Amount
from ledger.base import in_array, utcnow
from ledger.errors import (
    AlreadyReversed,
    HoldExceeded,
    HoldNotPending,
    IdempotencyConflict,
    InvalidEntry,
    NotFound,
)
from ledger.journal import Entry, EntrySpec, Leg, post_entries
from ledger.models import EntryKind, JournalEntry, Phase, Posting
from ledger.units import unit as unit_of

# -- holds -----------------------------------------------------------------------------------


def create_hold(
    session: Session,
    legs: Sequence[Leg],
    *,
    expires_at: datetime,
    description: str = "",
    idempotency_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Entry:
    """Reserve amounts: a pending entry that counts against available balances until resolved.

    Args:
        session: the caller's transaction.
        legs: the legs the hold would post in full, e.g. debit the customer's prepaid account and
            credit revenue.
        expires_at: after this moment the hold can no longer be posted and the expiry job
            releases it.
        description: the entry's description.
        idempotency_key: makes a repeated call return the first hold.
        metadata: the entry's metadata.
    """
    spec = EntrySpec(
        legs=tuple(legs),
        kind=EntryKind.HOLD,
        description=description,
        idempotency_key=idempotency_key,
        hold_expires_at=expires_at,
        metadata=dict(metadata or {}),
    )
    return post_entries(session, [spec])[0]


@dataclass(frozen=True, slots=True)
class HoldState:
    """A hold as stored: its pending legs, expiry and resolution (if any)."""

    id: int
    legs: tuple[Leg, ...]
    expires_at: datetime
    resolution: EntryKind | None
    resolution_entry_id: int | None

    @property
    def status(self) -> str:
        """``pending``, ``posted``, ``voided`` or ``expired``."""
        return {
            None: "pending",
            EntryKind.HOLD_POST: "posted",
            EntryKind.HOLD_VOID: "voided",
            EntryKind.HOLD_EXPIRE: "expired",
        }[self.resolution]


def get_hold(session: Session, hold_id: int, *, lock: bool = False) -> HoldState:
    """Load a hold; with ``lock`` the hold row is locked so resolvers serialize on it.

    Raises:
        NotFound: no hold with that id.
    """
    stmt = select(JournalEntry.id, JournalEntry.hold_expires_at).where(
        JournalEntry.id == hold_id, JournalEntry.kind == EntryKind.HOLD.value
    )
    if lock:
        stmt = stmt.with_for_update()
    row = session.execute(stmt).one_or_none()
    if row is None or row.hold_expires_at is None:
        raise NotFound(f"hold {hold_id} does not exist")
    resolution = session.execute(
        select(JournalEntry.id, JournalEntry.kind).where(JournalEntry.hold_id == hold_id)
    ).one_or_none()
    postings = session.execute(
        select(Posting.account_id, Posting.unit, Posting.amount)
        .where(Posting.entry_id == hold_id)
        .order_by(Posting.id)
    ).all()
    legs = tuple(Leg(p.account_id, Amount(p.amount, unit_of(p.unit))) for p in postings)
    return HoldState(
        id=hold_id,
        legs=legs,
        expires_at=row.hold_expires_at,
        resolution=EntryKind(resolution.kind) if resolution else None,
        resolution_entry_id=resolution.id if resolution else None,
    )


def void_specs(
    session: Session, hold_ids: Sequence[int], *, description: str = ""
) -> list[EntrySpec]:
    """The entries that void the given holds, to post with others in one :func:`post_entries` call.

    Holds already resolved (or unknown) are left out.

    The caller must keep other resolvers away (e.g. by holding the row that owns the hold);
    the unique ``hold_id`` still refuses a second resolution at the database.
    """
    if not hold_ids:
        return []
    resolved = set(
        session.scalars(
            select(JournalEntry.hold_id).where(in_array(JournalEntry.hold_id, hold_ids))
        )
    )
    legs: dict[int, list[Leg]] = defaultdict(list)
    for p in session.execute(
        select(Posting.entry_id, Posting.account_id, Posting.unit, Posting.amount)
        .where(in_array(Posting.entry_id, hold_ids), Posting.phase == Phase.PENDING)
        .order_by(Posting.id)
    ):
        legs[p.entry_id].append(Leg(p.account_id, Amount(-p.amount, unit_of(p.unit))))
    return [
        EntrySpec(
            legs=(),
            kind=EntryKind.HOLD_VOID,
            description=description or f"hold {hold_id} released",
            hold_id=hold_id,
            release_legs=tuple(legs[hold_id]),
        )
        for hold_id in hold_ids
        if hold_id not in resolved and hold_id in legs
    ]


def _resolve(
    session: Session,
    hold: HoldState,
    kind: EntryKind,
    legs: Sequence[Leg],
    *,
    description: str,
    idempotency_key: str | None,
) -> Entry:
    release = tuple(Leg(leg.account_id, -leg.amount) for leg in hold.legs)
    spec = EntrySpec(
        legs=tuple(legs),
        kind=kind,
        description=description,
        idempotency_key=idempotency_key,
        hold_id=hold.id,
        release_legs=release,
    )
    return post_entries(session, [spec])[0]


def _replayed_resolution(session: Session, hold_id: int, key: str | None) -> Entry | None:
    if key is None:
        return None
    row = session.execute(
        select(
            JournalEntry.id, JournalEntry.kind, JournalEntry.created_at, JournalEntry.hold_id
        ).where(JournalEntry.idempotency_key == key)
    ).one_or_none()
    if row is None:
        return None
    if row.hold_id != hold_id:
        raise IdempotencyConflict(f"idempotency key {key!r} was already used for another entry")
    return Entry(row.id, EntryKind(row.kind), row.created_at, key, replayed=True)


def _open_hold(session: Session, hold_id: int, now: datetime) -> HoldState:
    hold = get_hold(session, hold_id, lock=True)
    if hold.resolution is not None:
        raise HoldNotPending(f"hold {hold_id} is already {hold.status}", status=hold.status)
    if now >= hold.expires_at:
        raise HoldNotPending(
            f"hold {hold_id} expired at {hold.expires_at.isoformat()}", status="expired"
        )
    return hold


def post_hold(
    session: Session,
    hold_id: int,
    legs: Sequence[Leg] | None = None,
    *,
    allow_exceed: bool = False,
    description: str = "",
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> Entry:
    """Post a pending hold, in full or for a smaller amount, and release what it reserved.

    Args:
        session: the caller's transaction.
        hold_id: the pending hold's entry id.
        legs: the posted legs; default: exactly the held legs. Each account may receive at most
            what was held on it (in the held direction) unless ``allow_exceed``.
        allow_exceed: let the posted amounts exceed the hold (the overdraft checks still apply).
        description: the posting entry's description.
        idempotency_key: makes a repeated call return the first posting.
        now: the moment that decides whether the hold expired; default now.

    Raises:
        NotFound: no such hold.
        HoldNotPending: already posted, voided or expired.
        HoldExceeded: a leg is larger than what the hold reserved on that account.
    """
    replay = _replayed_resolution(session, hold_id, idempotency_key)
    if replay is not None:
        return replay
    hold = _open_hold(session, hold_id, now or utcnow())
    post_legs = list(hold.legs) if legs is None else list(legs)
    if not allow_exceed:
        held: dict[int, int] = defaultdict(int)
        for leg in hold.legs:
            held[leg.account_id] += leg.amount.atoms
        posted: dict[int, int] = defaultdict(int)
        for leg in post_legs:
            posted[leg.account_id] += leg.amount.atoms
        for account_id, atoms in posted.items():
            limit = held.get(account_id, 0)
            if atoms * limit < 0 or abs(atoms) > abs(limit):
                raise HoldExceeded(
                    f"hold {hold_id} reserved {abs(limit)} atoms on ledger account {account_id};"
                    f" cannot post {abs(atoms)}"
                )
    return _resolve(
        session,
        hold,
        EntryKind.HOLD_POST,
        post_legs,
        description=description,
        idempotency_key=idempotency_key,
    )


def void_hold(
    session: Session,
    hold_id: int,
    *,
    description: str = "",
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> Entry:
    """Release a pending hold without posting anything.

    Raises:
        NotFound: no such hold.
        HoldNotPending: already posted, voided or expired.
    """
    replay = _replayed_resolution(session, hold_id, idempotency_key)
    if replay is not None:
        return replay
    hold = _open_hold(session, hold_id, now or utcnow())
    return _resolve(
        session,
        hold,
        EntryKind.HOLD_VOID,
        [],
        description=description,
        idempotency_key=idempotency_key,
    )


def expire_holds(session: Session, *, now: datetime | None = None, limit: int = 1000) -> list[int]:
    """Release every hold whose expiry has passed and that nobody resolved; returns their ids.

    Safe to run concurrently with itself and with post/void: each hold is released exactly once.
    """
    at = now or utcnow()
    resolution = aliased(JournalEntry)
    candidates = session.scalars(
        select(JournalEntry.id)
        .where(
            JournalEntry.kind == EntryKind.HOLD.value,
            JournalEntry.hold_expires_at <= at,
            ~select(resolution.id).where(resolution.hold_id == JournalEntry.id).exists(),
        )
        .order_by(JournalEntry.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not candidates:
        return []
    # Re-read after locking: a resolver may have committed between our snapshot and the lock.
    resolved = set(
        session.scalars(
            select(JournalEntry.hold_id).where(JournalEntry.hold_id.in_(candidates))
        ).all()
    )
    specs = []
    expired: list[int] = []
    for hold_id in candidates:
        if hold_id in resolved:
            continue
        hold = get_hold(session, hold_id)
        specs.append(
            EntrySpec(
                legs=(),
                kind=EntryKind.HOLD_EXPIRE,
                description=f"hold {hold_id} expired",
                hold_id=hold_id,
                release_legs=tuple(Leg(leg.account_id, -leg.amount) for leg in hold.legs),
            )
        )
        expired.append(hold_id)
    if specs:
        post_entries(session, specs)
    return expired


# -- reversals -------------------------------------------------------------------------------


def reverse_entry(
    session: Session,
    entry_id: int,
    *,
    description: str = "",
    idempotency_key: str | None = None,
) -> Entry:
    """Write the entry that undoes the posted legs of ``entry_id`` (corrections never edit).

    Raises:
        NotFound: no such entry.
        AlreadyReversed: the entry was reversed before.
        InvalidEntry: the entry has no posted legs (a hold: void it instead).
    """
    row = session.execute(
        select(JournalEntry.id, JournalEntry.kind)
        .where(JournalEntry.id == entry_id)
        .with_for_update()
    ).one_or_none()
    if row is None:
        raise NotFound(f"journal entry {entry_id} does not exist")
    if idempotency_key is None:
        prior = session.scalar(
            select(JournalEntry.id).where(JournalEntry.reverses_entry_id == entry_id)
        )
        if prior is not None:
            raise AlreadyReversed(f"journal entry {entry_id} was already reversed by {prior}")
    postings = session.execute(
        select(Posting.account_id, Posting.unit, Posting.amount).where(
            Posting.entry_id == entry_id, Posting.phase == Phase.POSTED
        )
    ).all()
    if not postings:
        raise InvalidEntry(f"journal entry {entry_id} has no posted legs to reverse")
    legs = tuple(Leg(p.account_id, Amount(-p.amount, unit_of(p.unit))) for p in postings)
    spec = EntrySpec(
        legs=legs,
        kind=EntryKind.REVERSAL,
        description=description or f"reversal of entry {entry_id}",
        idempotency_key=idempotency_key,
        reverses_entry_id=entry_id,
    )
    try:
        return post_entries(session, [spec])[0]
    except IntegrityError as exc:
        if "reverses_entry_id" in str(exc.orig):
            raise AlreadyReversed(f"journal entry {entry_id} was already reversed") from exc
        raise
