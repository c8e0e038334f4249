"""Posting journal entries: validation, idempotency, and one statement for all postings.

Holds and reversals are in :mod:`ledger.holds`. Lock order, everywhere: hold entries by id first
(when resolving holds), then ledger accounts by id. Accounts without a cached balance (house
accounts) are never locked.
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
from sqlalchemy.orm import Session

from ledger.accounts import AccountRef
from ledger.amounts import Amount
from ledger.base import database_key, in_array, utcnow
from ledger.errors import (
    IdempotencyConflict,
    InsufficientFunds,
    InvalidEntry,
    MixedUnits,
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
    """Load accounts (plain rows); lock those with cached balances in id order (FOR NO KEY UPDATE).

    House accounts are read (once per process), never locked.
    """
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
    """Check that an entry is well formed and balances per book and unit.

    It needs two postings or more, no zero amounts, amounts in each account's unit, and a balance
    per book and unit (posted legs apart from pending and release legs).

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
    _check_keys_unique(todo)
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
        created = _insert_entries(session, todo, entry_ids, now)
        for s, entry_id in zip(todo, entry_ids, strict=True):
            written[id(s)] = Entry(entry_id, s.kind, created, s.idempotency_key)
        _insert_postings(session, todo, entry_ids, accounts)
        # Counters changed in the database; drop stale ORM copies from the session.
        for obj in list(session.identity_map.values()):
            if isinstance(obj, LedgerAccount) and obj.id in accounts:
                session.expire(obj)
    return [
        existing[s.idempotency_key] if s.idempotency_key in existing else written[id(s)]
        for s in specs
    ]


def _check_keys_unique(specs: Sequence[EntrySpec]) -> None:
    """Raises IdempotencyConflict when an idempotency key repeats among new entries."""
    seen_keys: set[str] = set()
    for s in specs:
        if s.idempotency_key is not None:
            if s.idempotency_key in seen_keys:
                raise IdempotencyConflict(
                    f"idempotency key {s.idempotency_key!r} repeats in a batch"
                )
            seen_keys.add(s.idempotency_key)


def _insert_entries(
    session: Session, specs: Sequence[EntrySpec], entry_ids: list[int], now: datetime
) -> Any:
    """Insert the entries under the ids taken (effective ``now`` unless stated).

    Returns their creation time.
    """
    return session.execute(
        _INSERT_ENTRIES,
        {
            "ids": entry_ids,
            "kinds": [s.kind.value for s in specs],
            "keys": [s.idempotency_key for s in specs],
            "descriptions": [s.description for s in specs],
            "hold_ids": [s.hold_id for s in specs],
            "hold_expiries": [s.hold_expires_at for s in specs],
            "reverses": [s.reverses_entry_id for s in specs],
            "effective": [s.effective_at or now for s in specs],
            "metadata": [json.dumps(dict(s.metadata), default=str) for s in specs],
        },
    ).scalar_one()


def _insert_postings(
    session: Session,
    specs: Sequence[EntrySpec],
    entry_ids: list[int],
    accounts: Mapping[int, _Acct],
) -> None:
    """Insert every posting of the entries in one statement.

    Raises:
        InsufficientFunds: the database rejected a balance below zero.
    """
    cols: dict[str, list[Any]] = {
        k: [] for k in ("entry_ids", "account_ids", "units", "books", "amounts", "phases")
    }
    for s, entry_id in zip(specs, entry_ids, strict=True):
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
    """Check standard entries and return the parameters of the statements that append them.

    The statements are :data:`APPEND_ENTRIES_SQL` and :data:`APPEND_POSTINGS_SQL`, for a caller that
    writes them in its own round trip (the gateway path pipelines them with its other writes).

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
