"""Posting journal entries, holds (two-phase transfers) and reversals.

Lock order, everywhere: hold entries by id first (when resolving holds), then ledger accounts by
id. Accounts without a cached balance (house accounts) are never locked.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT, NUMERIC, SMALLINT, TEXT, TIMESTAMP
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from ledger.accounts import AccountRef
from ledger.amounts import Amount
from ledger.base import database_key, in_array, utcnow
from ledger.errors import (
    AlreadyReversed,
    HoldExceeded,
    HoldNotPending,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidEntry,
    MixedUnits,
    NotFound,
    UnbalancedEntry,
)
from ledger.locks import lock_idempotency_keys
from ledger.models import AccountType, EntryKind, JournalEntry, LedgerAccount, Phase, Posting
from ledger.units import unit as unit_of


@dataclass(frozen=True, slots=True)
class Leg:
    """One requested posting: a signed amount on an account (debit positive, credit negative)."""

    account_id: int
    amount: Amount


def debit(account: AccountRef | int, amount: Amount) -> Leg:
    """A leg that debits ``account`` by ``amount`` (which must be positive)."""
    return Leg(account if isinstance(account, int) else account.id, amount)


def credit(account: AccountRef | int, amount: Amount) -> Leg:
    """A leg that credits ``account`` by ``amount`` (which must be positive)."""
    return Leg(account if isinstance(account, int) else account.id, -amount)


def transfer(
    debit_account: AccountRef | int, credit_account: AccountRef | int, amount: Amount
) -> list[Leg]:
    """The two legs that move ``amount`` from ``credit_account`` to ``debit_account``."""
    return [debit(debit_account, amount), credit(credit_account, amount)]


@dataclass(frozen=True, slots=True)
class EntrySpec:
    """A journal entry to write.

    Attributes:
        legs: posted legs (or, for a hold, the pending legs).
        kind: what the entry records.
        release_legs: for hold resolutions, the legs that release the pending amounts.
    """

    legs: tuple[Leg, ...]
    kind: EntryKind = EntryKind.STANDARD
    description: str = ""
    idempotency_key: str | None = None
    effective_at: datetime | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    hold_expires_at: datetime | None = None
    hold_id: int | None = None
    reverses_entry_id: int | None = None
    release_legs: tuple[Leg, ...] = ()

    def phased_legs(self) -> list[tuple[Leg, int]]:
        """Every leg with the phase it is stored under."""
        main_phase = Phase.PENDING if self.kind is EntryKind.HOLD else Phase.POSTED
        return [(leg, main_phase) for leg in self.legs] + [
            (leg, Phase.RELEASE) for leg in self.release_legs
        ]


@dataclass(frozen=True, slots=True)
class Entry:
    """A written journal entry.

    Attributes:
        replayed: True when an idempotency key matched an entry written earlier; nothing new was
            written.
    """

    id: int
    kind: EntryKind
    created_at: datetime
    idempotency_key: str | None
    replayed: bool = False


# -- validation ------------------------------------------------------------------------------


_ACCOUNT_COLUMNS = (
    LedgerAccount.id,
    LedgerAccount.code,
    LedgerAccount.type,
    LedgerAccount.unit,
    LedgerAccount.book,
    LedgerAccount.forbid_negative,
    LedgerAccount.track_balance,
    LedgerAccount.debits_posted,
    LedgerAccount.credits_posted,
    LedgerAccount.debits_pending,
    LedgerAccount.credits_pending,
)


class _Acct(NamedTuple):
    """What posting needs to know of a ledger account (its row as read under lock)."""

    id: int
    code: str
    type: str
    unit: str
    book: str
    forbid_negative: bool
    track_balance: bool
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int

    @property
    def unit_code(self) -> str:
        """The account's unit code."""
        return self.unit


#: Untracked (house) accounts by database and id. Their rows never change (no counters, a fixed
#: identity) and ids are never reused, so once read they are kept for the process.
_HOUSE: dict[str, dict[int, _Acct]] = {}


def _load_accounts(session: Session, ids: Iterable[int]) -> dict[int, _Acct]:
    """Load accounts (plain rows); lock those with cached balances in id order
    (FOR NO KEY UPDATE). House accounts are read (once per process), never locked."""
    wanted = sorted(set(ids))
    house_cache = _HOUSE.setdefault(database_key(session), {})
    found = {i: house_cache[i] for i in wanted if i in house_cache}
    rest = [i for i in wanted if i not in found]
    if rest:
        locked = session.execute(
            select(*_ACCOUNT_COLUMNS)
            .where(in_array(LedgerAccount.id, rest), LedgerAccount.track_balance.is_(True))
            .order_by(LedgerAccount.id)
            .with_for_update(key_share=True)
        ).all()
        found.update((a.id, _Acct(*a)) for a in locked)
    unknown = [i for i in rest if i not in found]
    if unknown:
        for row in session.execute(
            select(*_ACCOUNT_COLUMNS).where(
                in_array(LedgerAccount.id, unknown), LedgerAccount.track_balance.is_(False)
            )
        ).all():
            found[row.id] = house_cache[row.id] = _Acct(*row)
    missing = [i for i in wanted if i not in found]
    if missing:
        raise InvalidEntry(f"ledger accounts {missing} do not exist")
    return found


class _AccountLike(Protocol):
    """What checking an entry needs of each account it posts to."""

    @property
    def id(self) -> int: ...
    @property
    def code(self) -> str: ...
    @property
    def unit_code(self) -> str: ...
    @property
    def book(self) -> str: ...


def validate_entry(spec: EntrySpec, accounts: Mapping[int, _AccountLike]) -> None:
    """Check that an entry has two postings or more, no zero amounts, amounts in each account's
    unit, and balances per book and unit (posted legs apart from pending and release legs).

    Raises:
        InvalidEntry, MixedUnits, UnbalancedEntry: what is wrong, naming the account.
    """
    if len(spec.legs) + len(spec.release_legs) < 2:
        raise InvalidEntry("a journal entry needs at least two postings")
    totals: dict[tuple[str, str, bool], int] = defaultdict(int)
    for leg, phase in spec.phased_legs():
        acct = accounts[leg.account_id]
        if leg.amount.is_zero():
            raise InvalidEntry(f"posting to ledger account {leg.account_id} has a zero amount")
        if leg.amount.unit.code != acct.unit_code:
            raise MixedUnits(
                f"ledger account {acct.id} ({acct.code}) holds {acct.unit_code},"
                f" not {leg.amount.unit.code}"
            )
        totals[(acct.book, acct.unit_code, phase == Phase.POSTED)] += leg.amount.atoms
    for (book, unit, posted), total in totals.items():
        if total != 0:
            amount = Amount(total, unit_of(unit))
            what = "posted" if posted else "pending"
            raise UnbalancedEntry(
                f"entry does not balance: {what} legs in book {book!r} are off by {amount}"
            )


def _check_funds(specs: Sequence[EntrySpec], accounts: Mapping[int, _Acct]) -> None:
    """Simulate the counters the trigger will write and refuse overdrafts with a clear error."""
    delta: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for spec in specs:
        for leg, phase in spec.phased_legs():
            d = delta[leg.account_id]
            a = leg.amount.atoms
            if phase == Phase.POSTED:
                d[0 if a > 0 else 1] += abs(a)
            elif phase == Phase.PENDING:
                d[2 if a > 0 else 3] += abs(a)
            else:  # a release reduces the pending counter on the side it was held
                d[2 if a < 0 else 3] -= abs(a)
    for account_id, (dp, cp, dpe, cpe) in delta.items():
        acct = accounts[account_id]
        if not acct.forbid_negative:
            continue
        debits_posted = acct.debits_posted + dp
        credits_posted = acct.credits_posted + cp
        debits_pending = acct.debits_pending + dpe
        credits_pending = acct.credits_pending + cpe
        if AccountType(acct.type).debit_normal:
            after = debits_posted - credits_posted - credits_pending
            before = acct.debits_posted - acct.credits_posted - acct.credits_pending
        else:
            after = credits_posted - debits_posted - debits_pending
            before = acct.credits_posted - acct.debits_posted - acct.debits_pending
        if after < 0:
            unit = unit_of(acct.unit)
            raise InsufficientFunds(
                f"ledger account {acct.id} ({acct.code}) has {Amount(before, unit)} available"
                f" and would need {Amount(before - after, unit)}",
                account_id=acct.id,
                available=Amount(before, unit).format(),
                required=Amount(before - after, unit).format(),
            )


# -- idempotency -----------------------------------------------------------------------------


def _leg_signature(spec: EntrySpec) -> dict[tuple[int, int], int]:
    sig: dict[tuple[int, int], int] = defaultdict(int)
    for leg, phase in spec.phased_legs():
        sig[(leg.account_id, phase)] += leg.amount.atoms
    return {k: v for k, v in sig.items() if v}


def _existing_by_key(session: Session, specs: Sequence[EntrySpec]) -> dict[str, Entry]:
    keys = sorted({s.idempotency_key for s in specs if s.idempotency_key})
    if not keys:
        return {}
    # Serialize writers of the same key: a concurrent duplicate waits, then sees the first.
    lock_idempotency_keys(session, keys)
    rows = session.execute(
        select(
            JournalEntry.id,
            JournalEntry.kind,
            JournalEntry.created_at,
            JournalEntry.idempotency_key,
        ).where(JournalEntry.idempotency_key.in_(keys))
    ).all()
    found = {
        r.idempotency_key: Entry(r.id, EntryKind(r.kind), r.created_at, r.idempotency_key, True)
        for r in rows
        if r.idempotency_key is not None
    }
    if not found:
        return {}
    sigs: dict[int, dict[tuple[int, int], int]] = defaultdict(lambda: defaultdict(int))
    for p in session.execute(
        select(Posting.entry_id, Posting.account_id, Posting.phase, Posting.amount).where(
            Posting.entry_id.in_([e.id for e in found.values()])
        )
    ):
        sigs[p.entry_id][(p.account_id, p.phase)] += p.amount
    for spec in specs:
        if spec.idempotency_key in found:
            entry = found[spec.idempotency_key]
            stored = {k: v for k, v in sigs[entry.id].items() if v}
            if stored != _leg_signature(spec) or entry.kind is not spec.kind:
                raise IdempotencyConflict(
                    f"idempotency key {spec.idempotency_key!r} was already used for a different"
                    f" entry ({entry.id})"
                )
    return found


# -- writing ---------------------------------------------------------------------------------

_NEXT_ENTRY_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('ledger_entries', 'id')) FROM generate_series(1, :n)"
)

_INSERT_ENTRIES = text(
    "WITH e AS (INSERT INTO ledger_entries (id, kind, idempotency_key, description, hold_id,"
    " hold_expires_at, reverses_entry_id, effective_at, metadata)"
    " SELECT * FROM unnest(:ids, :kinds, :keys, :descriptions, :hold_ids, :hold_expiries,"
    " :reverses, :effective, CAST(:metadata AS jsonb[])) RETURNING created_at)"
    " SELECT min(created_at) FROM e"
).bindparams(
    bindparam("ids", type_=ARRAY(BIGINT)),
    bindparam("kinds", type_=ARRAY(TEXT)),
    bindparam("keys", type_=ARRAY(TEXT)),
    bindparam("descriptions", type_=ARRAY(TEXT)),
    bindparam("hold_ids", type_=ARRAY(BIGINT)),
    bindparam("hold_expiries", type_=ARRAY(TIMESTAMP(timezone=True))),
    bindparam("reverses", type_=ARRAY(BIGINT)),
    bindparam("effective", type_=ARRAY(TIMESTAMP(timezone=True))),
    bindparam("metadata", type_=ARRAY(TEXT)),
)

_INSERT_POSTINGS = text(
    "INSERT INTO ledger_postings (entry_id, account_id, unit, book, amount, phase)"
    " SELECT * FROM unnest(:entry_ids, :account_ids, :units, :books, :amounts, :phases)"
).bindparams(
    bindparam("entry_ids", type_=ARRAY(BIGINT)),
    bindparam("account_ids", type_=ARRAY(BIGINT)),
    bindparam("units", type_=ARRAY(TEXT)),
    bindparam("books", type_=ARRAY(TEXT)),
    bindparam("amounts", type_=ARRAY(NUMERIC(38, 0))),
    bindparam("phases", type_=ARRAY(SMALLINT)),
)


def post_entries(session: Session, specs: Sequence[EntrySpec]) -> list[Entry]:
    """Write several journal entries in one go (one statement for all postings).

    All or nothing: if any entry is invalid or would overdraw an account that forbids negative
    balances, nothing is written. Entries whose idempotency key was used before are returned with
    ``replayed=True`` and not written again.

    Raises:
        InvalidEntry, UnbalancedEntry, MixedUnits: malformed entries.
        InsufficientFunds: an account that forbids negative balances would go below zero.
        IdempotencyConflict: a key was used before for a different entry.
    """
    existing = _existing_by_key(session, specs)
    todo = [s for s in specs if s.idempotency_key not in existing]
    seen_keys: set[str] = set()
    for s in todo:
        if s.idempotency_key is not None:
            if s.idempotency_key in seen_keys:
                raise IdempotencyConflict(
                    f"idempotency key {s.idempotency_key!r} repeats in a batch"
                )
            seen_keys.add(s.idempotency_key)
    written: dict[int, Entry] = {}
    if todo:
        accounts = _load_accounts(
            session, (leg.account_id for s in todo for leg, _ in s.phased_legs())
        )
        for s in todo:
            validate_entry(s, accounts)
        _check_funds(todo, accounts)
        now = utcnow()
        # ids first, so each entry's postings name it without relying on RETURNING order
        entry_ids = list(session.scalars(_NEXT_ENTRY_IDS, {"n": len(todo)}))
        created = session.execute(
            _INSERT_ENTRIES,
            {
                "ids": entry_ids,
                "kinds": [s.kind.value for s in todo],
                "keys": [s.idempotency_key for s in todo],
                "descriptions": [s.description for s in todo],
                "hold_ids": [s.hold_id for s in todo],
                "hold_expiries": [s.hold_expires_at for s in todo],
                "reverses": [s.reverses_entry_id for s in todo],
                "effective": [s.effective_at or now for s in todo],
                "metadata": [json.dumps(dict(s.metadata), default=str) for s in todo],
            },
        ).scalar_one()
        cols: dict[str, list[Any]] = {
            k: [] for k in ("entry_ids", "account_ids", "units", "books", "amounts", "phases")
        }
        for s, entry_id in zip(todo, entry_ids, strict=True):
            written[id(s)] = Entry(entry_id, s.kind, created, s.idempotency_key)
            for leg, phase in s.phased_legs():
                acct = accounts[leg.account_id]
                cols["entry_ids"].append(entry_id)
                cols["account_ids"].append(acct.id)
                cols["units"].append(acct.unit)
                cols["books"].append(acct.book)
                cols["amounts"].append(Decimal(leg.amount.atoms))
                cols["phases"].append(phase)
        try:
            session.execute(_INSERT_POSTINGS, cols)
        except IntegrityError as exc:
            if "no_negative_balance" in str(exc.orig):
                raise InsufficientFunds(
                    "a posting would take an account below zero (rejected by the database)"
                ) from exc
            raise
        # Counters changed in the database; drop stale ORM copies from the session.
        for obj in list(session.identity_map.values()):
            if isinstance(obj, LedgerAccount) and obj.id in accounts:
                session.expire(obj)
    return [
        existing[s.idempotency_key] if s.idempotency_key in existing else written[id(s)]
        for s in specs
    ]


#: Statements that append standard entries with ids taken beforehand (see :func:`append_entries`)
APPEND_ENTRIES_SQL = (
    "INSERT INTO ledger_entries (id, kind, description, effective_at, metadata)"
    " SELECT id, kind, description, effective_at, metadata"
    " FROM json_to_recordset(%(ledger_entries)s::json)"
    " AS e(id bigint, kind text, description text, effective_at timestamptz, metadata jsonb)"
)
APPEND_POSTINGS_SQL = (
    "INSERT INTO ledger_postings (entry_id, account_id, unit, book, amount, phase)"
    " SELECT e, a, u, b, m, 0 FROM json_to_recordset(%(ledger_postings)s::json)"
    " AS p(e bigint, a bigint, u text, b text, m numeric)"
)


def append_entries(
    entries: Sequence[tuple[int, EntrySpec]], accounts: Mapping[int, _AccountLike]
) -> dict[str, str]:
    """Check standard entries and return the parameters of :data:`APPEND_ENTRIES_SQL` and
    :data:`APPEND_POSTINGS_SQL`, for a caller that writes them in its own round trip (the
    gateway path pipelines them with its other writes).

    The caller holds the rows that make the postings safe (the wallet's account rows, whose
    lots pay for them); overdrafts are refused by the database's CHECK constraint, and every
    entry's balance is checked again at commit.

    Args:
        entries: ``(entry id, spec)``; ids from the ``ledger_entries`` sequence.
        accounts: every account the legs post to.

    Raises:
        InvalidEntry, MixedUnits, UnbalancedEntry: a malformed entry (nothing is returned).
    """
    rows: list[dict[str, Any]] = []
    postings: list[dict[str, Any]] = []
    for entry_id, spec in entries:
        if (
            spec.kind is not EntryKind.STANDARD
            or spec.idempotency_key is not None
            or (spec.release_legs)
        ):
            raise InvalidEntry("append_entries writes standard entries without idempotency keys")
        validate_entry(spec, accounts)
        rows.append(
            {
                "id": entry_id,
                "kind": spec.kind.value,
                "description": spec.description,
                "effective_at": (spec.effective_at or utcnow()).isoformat(),
                "metadata": dict(spec.metadata),
            }
        )
        for leg in spec.legs:
            acct = accounts[leg.account_id]
            postings.append(
                {
                    "e": entry_id,
                    "a": leg.account_id,
                    "u": acct.unit_code,
                    "b": acct.book,
                    "m": leg.amount.atoms,
                }
            )
    return {
        "ledger_entries": json.dumps(rows, default=str),
        "ledger_postings": json.dumps(postings),
    }


def post_entry(
    session: Session,
    legs: Sequence[Leg],
    *,
    description: str = "",
    idempotency_key: str | None = None,
    effective_at: datetime | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Entry:
    """Write one balanced entry of posted legs. See :func:`post_entries`."""
    spec = EntrySpec(
        legs=tuple(legs),
        description=description,
        idempotency_key=idempotency_key,
        effective_at=effective_at,
        metadata=dict(metadata or {}),
    )
    return post_entries(session, [spec])[0]


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
        legs: the legs the hold would post in full, e.g. debit the customer's prepaid account and
            credit revenue.
        expires_at: after this moment the hold can no longer be posted and the expiry job
            releases it.
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
    """The entries that void the given holds, to post together with others in one
    :func:`post_entries` call; holds already resolved (or unknown) are left out.

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
        legs: the posted legs; default: exactly the held legs. Each account may receive at most
            what was held on it (in the held direction) unless ``allow_exceed``.
        allow_exceed: let the posted amounts exceed the hold (the overdraft checks still apply).

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
