"""Opening ledger accounts and reading their balances."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, event, func, select, text, tuple_
from sqlalchemy.dialects.postgresql import ARRAY, TEXT, insert
from sqlalchemy.orm import Session

from ledger.amounts import Amount
from ledger.base import database_key
from ledger.errors import InvalidEntry, NotFound
from ledger.models import OPERATOR_BOOK, AccountType, JournalEntry, LedgerAccount, Posting
from ledger.units import Unit
from ledger.units import unit as unit_of


@dataclass(frozen=True, slots=True)
class AccountRef:
    """What the ledger needs to know about an account to post to it."""

    id: int
    code: str
    type: AccountType
    unit: Unit
    book: str
    owner_id: str | None
    forbid_negative: bool
    track_balance: bool

    @property
    def unit_code(self) -> str:
        """The account's unit code."""
        return self.unit.code


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's balance on its normal side (credits minus debits for a liability).

    Attributes:
        posted: the posted balance.
        pending_out: pending amounts that will reduce the balance (held, not yet posted).
        pending_in: pending amounts that will increase it (not spendable until posted).
        available: ``posted - pending_out``: what can be spent now.
        version: bumps with every change (0 for accounts without a cached balance).
    """

    account_id: int
    posted: Amount
    pending_out: Amount
    pending_in: Amount
    version: int

    @property
    def available(self) -> Amount:
        """What may be spent now: posted minus what holds have reserved."""
        return self.posted - self.pending_out


def _ref(row: LedgerAccount) -> AccountRef:
    return AccountRef(
        id=row.id,
        code=row.code,
        type=AccountType(row.type),
        unit=unit_of(row.unit),
        book=row.book,
        owner_id=row.owner_id,
        forbid_negative=row.forbid_negative,
        track_balance=row.track_balance,
    )


#: An account's identity: book, unit code, chart code, owner.
Key = tuple[str, str, str, str | None]


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """The identity and settings of a ledger account to open (see :func:`open_account`)."""

    code: str
    type: AccountType
    unit: Unit
    book: str = OPERATOR_BOOK
    owner_id: str | None = None
    forbid_negative: bool = False
    track_balance: bool = True

    @property
    def key(self) -> Key:
        """What makes an account unique: book, unit, code and owner."""
        return (self.book, self.unit.code, self.code, self.owner_id)


# Account identities never change and accounts are never deleted, so refs of committed accounts
# are cached for the life of the process. Refs seen inside a transaction are kept on the session
# and join the process cache only when that transaction commits (a rollback forgets them).
# The cache is per database (keyed by its URL), since ids differ between databases.
_COMMITTED: dict[str, dict[Key, AccountRef]] = {}
_CACHE_LIMIT = 200_000
_PENDING = "ledger_account_refs"


def _database(session: Session) -> str:
    return database_key(session)


@event.listens_for(Session, "after_commit")
def _publish_refs(session: Session) -> None:
    pending: dict[str, dict[Key, AccountRef]] | None = session.info.pop(_PENDING, None)
    for db, refs in (pending or {}).items():
        cache = _COMMITTED.setdefault(db, {})
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        cache.update(refs)


@event.listens_for(Session, "after_rollback")
def _forget_refs(session: Session) -> None:
    session.info.pop(_PENDING, None)


def _check_settings(spec: AccountSpec, ref: AccountRef) -> AccountRef:
    if (ref.type, ref.forbid_negative, ref.track_balance) != (
        spec.type,
        spec.forbid_negative,
        spec.track_balance,
    ):
        raise InvalidEntry(
            f"ledger account {spec.code!r} in book {spec.book!r} already exists with other settings"
        )
    return ref


_FIND_OWNED = text(
    "SELECT a.* FROM ledger_accounts a"
    " JOIN unnest(:books, :units, :codes, :owners) AS k(book, unit, code, owner_id)"
    " ON a.book = k.book AND a.unit = k.unit AND a.code = k.code AND a.owner_id = k.owner_id"
).bindparams(*(bindparam(n, type_=ARRAY(TEXT)) for n in ("books", "units", "codes", "owners")))


def _find(session: Session, specs: Sequence[AccountSpec]) -> dict[Key, AccountRef]:
    """The existing accounts among ``specs``, by key.

    One indexed join for owned accounts (whatever their number), one small query for house accounts.
    """
    owned = [s for s in specs if s.owner_id is not None]
    house = [s for s in specs if s.owner_id is None]
    rows: list[LedgerAccount] = []
    if owned:
        rows += session.scalars(
            select(LedgerAccount).from_statement(_FIND_OWNED),
            {
                "books": [s.book for s in owned],
                "units": [s.unit.code for s in owned],
                "codes": [s.code for s in owned],
                "owners": [s.owner_id for s in owned],
            },
        ).all()
    if house:
        rows += session.scalars(
            select(LedgerAccount).where(
                LedgerAccount.owner_id.is_(None),
                tuple_(LedgerAccount.book, LedgerAccount.unit, LedgerAccount.code).in_(
                    [(s.book, s.unit.code, s.code) for s in house]
                ),
            )
        ).all()
    return {(r.book, r.unit, r.code, r.owner_id): _ref(r) for r in rows}


def open_accounts(session: Session, specs: Sequence[AccountSpec]) -> list[AccountRef]:
    """Return the accounts ``specs`` describe, creating missing ones.

    One INSERT and one SELECT for all of them, nothing at all for accounts already known to this
    process.

    Safe under concurrency: two callers opening the same account get the same row.

    Raises:
        InvalidEntry: an account exists with different flags, or a spec forbids negative
            balances without tracking its balance.
    """
    db = _database(session)
    pending: dict[Key, AccountRef] = session.info.setdefault(_PENDING, {}).setdefault(db, {})
    committed = _COMMITTED.get(db, {})
    found: dict[Key, AccountRef] = {}
    missing: list[AccountSpec] = []
    for spec in specs:
        if spec.forbid_negative and not spec.track_balance:
            raise InvalidEntry("an account that forbids negative balances must track its balance")
        ref = committed.get(spec.key) or pending.get(spec.key)
        if ref is None:
            missing.append(spec)
        else:
            found[spec.key] = _check_settings(spec, ref)
    if missing:
        unique = list({s.key: s for s in missing}.values())
        by_key = _find(session, unique)
        absent = [s for s in unique if s.key not in by_key]
        if absent:
            session.execute(
                insert(LedgerAccount)
                .values(
                    [
                        {
                            "code": s.code,
                            "type": s.type.value,
                            "unit": s.unit.code,
                            "book": s.book,
                            "owner_id": s.owner_id,
                            "forbid_negative": s.forbid_negative,
                            "track_balance": s.track_balance,
                        }
                        for s in absent
                    ]
                )
                .on_conflict_do_nothing(constraint="uq_ledger_accounts_identity")
            )
            by_key |= _find(session, absent)
        for s in unique:
            ref = _check_settings(s, by_key[s.key])
            pending[s.key] = ref
            found[s.key] = ref
    return [found[s.key] for s in specs]


def open_account(
    session: Session,
    *,
    code: str,
    type: AccountType,
    unit: Unit,
    book: str = OPERATOR_BOOK,
    owner_id: str | None = None,
    forbid_negative: bool = False,
    track_balance: bool = True,
) -> AccountRef:
    """Return the account ``(book, unit, code, owner_id)``, creating it if needed.

    Args:
        session: the caller's session; not committed here.
        code: a chart-of-accounts name such as ``customer:prepaid`` or ``revenue:usage``.
        type: accounting type, which decides the normal side.
        unit: currency or entitlement unit; an account holds exactly one.
        book: ``operator`` or a reseller's own book (``reseller:<id>``).
        owner_id: the wallet account this ledger account belongs to, if any.
        forbid_negative: reject any posting that would take the balance below zero.
        track_balance: keep a cached balance row; house accounts touched by every entry pass
            False and have their balance derived from postings.

    Raises:
        InvalidEntry: an account with the same identity exists with different flags.
    """
    spec = AccountSpec(code, type, unit, book, owner_id, forbid_negative, track_balance)
    return open_accounts(session, [spec])[0]


def get_account(session: Session, account_id: int) -> AccountRef:
    """Load one account.

    Raises:
        NotFound: no such account.
    """
    row = session.get(LedgerAccount, account_id)
    if row is None:
        raise NotFound(f"ledger account {account_id} does not exist")
    return _ref(row)


def _orient(ref: AccountRef, debits: int, credits: int) -> int:
    return debits - credits if ref.type.debit_normal else credits - debits


def get_balance(session: Session, account_id: int) -> Balance:
    """The current balance of an account, from its cached row or, for house accounts, postings."""
    row = session.execute(
        select(LedgerAccount)
        .where(LedgerAccount.id == account_id)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"ledger account {account_id} does not exist")
    ref = _ref(row)
    if ref.track_balance:
        dp, cp, dpe, cpe, version = (
            row.debits_posted,
            row.credits_posted,
            row.debits_pending,
            row.credits_pending,
            row.version,
        )
    else:
        dp, cp, dpe, cpe = _sums_from_postings(session, account_id, None)
        version = 0
    posted = _orient(ref, dp, cp)
    pending_out = dpe if not ref.type.debit_normal else cpe
    pending_in = cpe if not ref.type.debit_normal else dpe
    return Balance(
        account_id=account_id,
        posted=Amount(posted, ref.unit),
        pending_out=Amount(pending_out, ref.unit),
        pending_in=Amount(pending_in, ref.unit),
        version=version,
    )


def _sums_from_postings(
    session: Session, account_id: int, as_of: datetime | None
) -> tuple[int, int, int, int]:
    cols = (
        func.coalesce(
            func.sum(text("CASE WHEN phase = 0 AND amount > 0 THEN amount ELSE 0 END")), 0
        ),
        func.coalesce(
            func.sum(text("CASE WHEN phase = 0 AND amount < 0 THEN -amount ELSE 0 END")), 0
        ),
        func.coalesce(
            func.sum(
                text(
                    "CASE WHEN phase = 1 AND amount > 0 THEN amount"
                    " WHEN phase = 2 AND amount < 0 THEN amount ELSE 0 END"
                )
            ),
            0,
        ),
        func.coalesce(
            func.sum(
                text(
                    "CASE WHEN phase = 1 AND amount < 0 THEN -amount"
                    " WHEN phase = 2 AND amount > 0 THEN -amount ELSE 0 END"
                )
            ),
            0,
        ),
    )
    stmt = select(*cols).select_from(Posting).where(Posting.account_id == account_id)
    if as_of is not None:
        stmt = stmt.join(JournalEntry, JournalEntry.id == Posting.entry_id).where(
            JournalEntry.created_at <= as_of
        )
    dp, cp, dpe, cpe = session.execute(stmt).one()
    return int(dp), int(cp), int(dpe), int(cpe)


def balance_as_of(session: Session, account_id: int, as_of: datetime) -> Amount:
    """The posted balance on the account's normal side as of a moment (transaction time).

    Args:
        session: the caller's session.
        account_id: the ledger account.
        as_of: an aware datetime; entries committed by transactions that started at or before it
            count.
    """
    ref = get_account(session, account_id)
    dp, cp, _, _ = _sums_from_postings(session, account_id, as_of)
    return Amount(_orient(ref, dp, cp), ref.unit)
