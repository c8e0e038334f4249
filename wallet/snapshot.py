"""The gateway path's first round trip: lock and read everything a batch of operations needs.

One pipelined round trip (psycopg pipeline mode, statements prepared by the driver after a few
uses; their text is in :mod:`wallet.snapshot_sql`) runs, in this order, in the caller's
transaction:

1. the usage gate of every billing tree that records are charged to, shared (``wallet/gate.py``),
   and the database clock read after it (``received_at``);
2. the catalog lock of every currency, shared, with the catalog versions and rating watermarks
   (``plans/watermark.py``: catalog changes take it exclusively);
3. record ids claimed (``INSERT ... ON CONFLICT DO NOTHING``, in id order), with the first
   results of ids claimed before;
4. the wallet account rows of the batch, with their resellers, ``FOR NO KEY UPDATE`` in id order
   (the wallet's lock);
5. the authorizations the batch names, ``FOR UPDATE`` in id order;
6. then, without locks (the account rows protect them): open credit lots (and the lots those
   authorizations reserved from), live subscriptions with their quota windows, credit limit in
   use, failed-request policies, customer ledger account ids not cached yet, and ledger entry
   ids for the batch's entries.

No ORM objects are loaded; rows become the plain state of :mod:`wallet.burndown`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import msgspec
import psycopg
from sqlalchemy.orm import Session

from ledger.accounts import AccountRef
from ledger.base import database_key
from ledger.models import AccountType
from ledger.units import Unit
from ledger.units import unit as unit_of
from plans.catalog import DEFAULT_FAILED_REQUEST_POLICY, FailedRequestPolicy, get_plan
from plans.failures import FAILURE_KINDS
from wallet.burn_order import BONUS, DEFAULT_BURN_ORDER, PAID, validate_burn_order
from wallet.burndown import Lot, Owner, PlanTerms, Reservation, WalletState, Window
from wallet.ledger_accounts import CustomerLedger, customer_ledger_of
from wallet.snapshot_sql import ACCOUNTS, AUTH_COLUMNS, AUTHS, CLAIM, GATE_AND_CATALOG, STATE

#: what uses the credit limit besides open authorizations: overage not yet invoiced, invoices
#: not paid yet, and what refunds and disputes left the customer owing (in snapshot_sql.STATE)
CREDIT_IN_USE_CODES = ("receivable:unbilled", "receivable:invoiced", "receivable:reversals")
_LEDGER_CODES = (
    "customer:prepaid",
    "customer:bonus",
    "customer:package_tokens",
    "deferred:packages",
    "deferred:subscriptions",
    "receivable:unbilled",
)


def driver_connection(session: Session) -> psycopg.Connection[Any]:
    """The psycopg connection under the session's transaction."""
    conn = session.connection().connection.driver_connection
    assert isinstance(conn, psycopg.Connection)
    return conn


# -- state -----------------------------------------------------------------------------------


@dataclass(slots=True)
class AccountRow:
    """A wallet account as the gateway path needs it."""

    id: str
    kind: str
    parent_id: str | None
    currency: str
    credit_limit: int
    failed_request_policy_id: str | None
    discounts: list[dict[str, Any]]
    burn_order: list[str] | None
    low_balance_threshold: int | None
    #: ``active``, ``suspended`` or ``closed`` (only active accounts are served)
    status: str = "active"

    @property
    def unit(self) -> Unit:
        """The account's currency."""
        return unit_of(self.currency)


@dataclass(slots=True, eq=False)
class AuthRow:
    """An authorization row, changed in memory and written back when ``dirty``."""

    id: str
    account_id: str
    reseller_account_id: str | None
    model: str | None
    multi_capture: bool
    token_grant: bool
    status: str
    decline_code: str | None
    requested: int
    held_money: int
    held_tokens: int
    captured_money: int
    captured_tokens: int
    released_money: int
    released_tokens: int
    captures: int
    final: bool
    plan_covered: bool
    expires_at: datetime
    reservation: Reservation = field(default_factory=Reservation)
    hold_entry_id: int | None = None
    usage_record_id: str | None = None
    resolved_at: datetime | None = None
    created_at: datetime | None = None
    new: bool = False
    dirty: bool = False

    @property
    def is_open(self) -> bool:
        """Approved and not resolved (it may still have passed its expiry)."""
        return self.status == "approved"


@dataclass(frozen=True, slots=True)
class PreviousResult:
    """The stored outcome of a record id charged before."""

    account_id: str
    currency: str
    billed: int
    credited: int
    reason: str | None


@dataclass
class Snapshot:
    """What the batch read under its locks."""

    received_at: datetime
    accounts: dict[str, AccountRow]
    wallets: dict[str, WalletState]
    lots: dict[int, Lot]
    auths: dict[str, AuthRow]
    claimed: set[str]
    previous: dict[str, PreviousResult]
    catalog_versions: dict[str, int]
    priced_through: dict[str, datetime | None]
    policies: dict[str, FailedRequestPolicy]
    ledgers: dict[str, CustomerLedger]
    entry_ids: list[int]

    def policy_of(self, account: AccountRow) -> FailedRequestPolicy:
        """The account's failed-request policy (its latest version), or the built-in one."""
        pid = account.failed_request_policy_id
        if pid is None:
            return DEFAULT_FAILED_REQUEST_POLICY
        return self.policies.get(pid, DEFAULT_FAILED_REQUEST_POLICY)


_ACCOUNT_TYPES = {t.value: t for t in AccountType}

#: Customer ledger accounts per database and wallet account: their identities never change and
#: they are never deleted, so rows read from the database are kept for the process.
_LEDGER_CACHE: dict[str, dict[str, CustomerLedger]] = {}
_LEDGER_CACHE_LIMIT = 500_000


def _aware(at: datetime | None) -> datetime | None:
    return at.astimezone(UTC) if at is not None else None


def auth_from_row(row: Sequence[Any]) -> AuthRow:
    """An :class:`AuthRow` from a row in :data:`AUTH_COLUMNS` order."""
    r = dict(zip(AUTH_COLUMNS, row, strict=True))
    expires_at = _aware(r["expires_at"])
    assert expires_at is not None
    return AuthRow(
        id=r["id"],
        account_id=r["account_id"],
        reseller_account_id=r["reseller_account_id"],
        model=r["model"],
        multi_capture=r["multi_capture"],
        token_grant=r["token_grant"],
        status=r["status"],
        decline_code=r["decline_code"],
        requested=int(r["requested"]),
        held_money=int(r["held_money"]),
        held_tokens=int(r["held_tokens"]),
        captured_money=int(r["captured_money"]),
        captured_tokens=int(r["captured_tokens"]),
        released_money=int(r["released_money"]),
        released_tokens=int(r["released_tokens"]),
        captures=r["captures"],
        final=r["final"],
        plan_covered=r["plan_covered"],
        expires_at=expires_at,
        reservation=Reservation.from_stored(
            r["reserved"] or [],
            r["reserved_quota"] or [],
            int(r["overage"]),
            int(r["reseller_overage"]),
        ),
        hold_entry_id=r["hold_entry_id"],
        usage_record_id=r["usage_record_id"],
        resolved_at=_aware(r["resolved_at"]),
        created_at=_aware(r["created_at"]),
    )


def load(
    session: Session,
    *,
    account_ids: Iterable[str],
    authorization_ids: Iterable[str],
    claims: Mapping[str, str],
    gated_accounts: Iterable[str],
) -> Snapshot:
    """Lock and read what a batch needs, in one round trip (see the module docstring).

    Args:
        session: the batch's transaction, in which the locks are taken.
        account_ids: accounts the batch's operations name (resellers are added).
        authorization_ids: authorizations named by operations or records.
        claims: record id -> account id, to claim for exactly-once charging.
        gated_accounts: accounts that records are charged to (their billing trees' gates).
    """
    conn = driver_connection(session)
    cache = _LEDGER_CACHE.setdefault(database_key(session), {})
    params = _params(account_ids, authorization_ids, claims, gated_accounts, cache)
    curs = []
    with conn.pipeline():
        # the same few statements run all day with parameters of the same shape: plan once
        conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        for sql in (GATE_AND_CATALOG, CLAIM, ACCOUNTS, AUTHS, STATE):
            curs.append(conn.execute(sql, params))
    gate, claim, account_list, auths, state = (c.fetchall() for c in curs)
    received_at, catalog = gate[0][0].astimezone(UTC), gate[0][1] or []
    doc = msgspec.json.decode(state[0][0])
    account_rows = {r[0]: _account_row(r) for r in account_list}
    lot_map = {r[0]: _lot(r) for r in sorted(doc["lots"] or [])}
    wallets = _wallets(account_rows, lot_map, {r[0]: r[1] for r in doc["credit"] or []})
    _add_plans(session, wallets, doc["windows"] or [])
    return Snapshot(
        received_at=received_at,
        accounts=account_rows,
        wallets=wallets,
        lots=lot_map,
        auths={r[0]: auth_from_row(r) for r in auths},
        claimed={r[0] for r in claim if r[1]},
        previous={
            r[0]: PreviousResult(r[2], r[3], int(r[4]), int(r[5]), r[6]) for r in claim if not r[1]
        },
        catalog_versions={r[0]: int(r[1]) for r in catalog},
        priced_through={r[0]: _parse_at(r[2]) for r in catalog},
        policies={r[0]: _policy(r) for r in doc["policies"] or []},
        ledgers=_read_ledgers(session, cache, account_rows, doc["ledgers"] or []),
        entry_ids=doc["entry_ids"] or [],
    )


def _params(
    account_ids: Iterable[str],
    authorization_ids: Iterable[str],
    claims: Mapping[str, str],
    gated_accounts: Iterable[str],
    cache: Mapping[str, CustomerLedger],
) -> dict[str, str]:
    """The one JSON parameter every statement of the round trip reads."""
    claim_ids = sorted(claims)
    accounts = sorted(set(account_ids))
    doc = {
        "accounts": accounts,
        "auths": sorted(set(authorization_ids)),
        "gated": sorted(set(gated_accounts)),
        "ids": claim_ids,
        "claim_accounts": [claims[i] for i in claim_ids],
        # resellers are not known yet; their rows are read again, which is cheap
        "cached": [a for a in accounts if a in cache],
    }
    return {"p": msgspec.json.encode(doc).decode()}


def _account_row(r: Sequence[Any]) -> AccountRow:
    """An account row of :data:`wallet.snapshot_sql.ACCOUNTS`."""
    return AccountRow(
        r[0],
        r[1],
        r[2],
        r[3],
        int(r[4]),
        r[5],
        msgspec.json.decode(r[6]) if r[6] else [],
        msgspec.json.decode(r[7]) if r[7] else None,
        _int_or_none(r[8]),
        r[9],
    )


def _lot(r: Sequence[Any]) -> Lot:
    """A lot of ``STATE``'s ``lots``."""
    return Lot(
        id=r[0],
        account_id=r[1],
        kind=r[2],
        remaining=r[3],
        reserved=r[4],
        granted=r[5],
        priority=r[6],
        expires_at=_parse_at(r[7]),
        models=tuple(r[8] or ()),
        price=r[9],
        deferred=r[10],
        ledger_account_id=r[11],
        valid_from=_parse_at(r[12]),
    )


def _add_plans(
    session: Session, wallets: Mapping[str, WalletState], rows: Sequence[Sequence[Any]]
) -> None:
    """Give each wallet its live plan's terms, span and quota windows.

    ``STATE``'s ``windows``: one row per window, or one without a window for a plan without quotas.
    """
    for r in rows:
        w = wallets[r[0]]
        if w.plan is None:
            w.plan = _plan_terms(session, r[2])
            w.plan_span = (_parse_at(r[10]), _parse_at(r[11]))
        if r[3] is not None:
            w.windows.append(
                Window(r[3], r[1], r[4], r[5], r[6], _parse_at(r[7]), _parse_at(r[8]), r[9])
            )


def _policy(r: Sequence[Any]) -> FailedRequestPolicy:
    """A failed-request policy of ``STATE``'s ``policies``."""
    return FailedRequestPolicy(
        r[0],
        r[1],
        MappingProxyType(dict(zip(FAILURE_KINDS, r[3:], strict=True))),
        _parse_at(r[2]),
    )


def _order(burn_order: list[str] | None) -> tuple[str, ...]:
    return DEFAULT_BURN_ORDER if burn_order is None else validate_burn_order(burn_order)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _parse_at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value).astimezone(UTC) if value is not None else None


def _wallets(
    accounts: Mapping[str, AccountRow], lots: Mapping[int, Lot], in_use: Mapping[str, int]
) -> dict[str, WalletState]:
    by_account: dict[str, list[Lot]] = defaultdict(list)
    for lot in lots.values():
        by_account[lot.account_id].append(lot)
    wallets: dict[str, WalletState] = {}
    for a in accounts.values():
        own = by_account.get(a.id, [])
        wallets[a.id] = WalletState(
            account=Owner(a.id, a.parent_id, a.credit_limit),
            unit=a.unit,
            order=_order(a.burn_order),
            lots=own,
            overage_used=in_use.get(a.id, 0),
            money_before=sum(lot.remaining for lot in own if lot.kind in (BONUS, PAID)),
        )
    return wallets


#: Plans never change once created: their burn-down terms are kept for the process.
_PLANS: dict[tuple[str, str], PlanTerms] = {}


def _plan_terms(session: Session, plan_id: str) -> PlanTerms:
    key = (database_key(session), plan_id)
    terms = _PLANS.get(key)
    if terms is None:
        plan = get_plan(session, plan_id)
        terms = _PLANS[key] = PlanTerms(tuple(plan.models), plan.on_exhausted)
    return terms


def _read_ledgers(
    session: Session,
    cache: dict[str, CustomerLedger],
    accounts: Mapping[str, AccountRow],
    rows: Sequence[Sequence[Any]],
) -> dict[str, CustomerLedger]:
    """The customer ledger accounts of every account of the batch.

    Cached ones, those read now (cached when their rows were committed before this transaction), and
    any still missing opened now (an account made before its chart was complete).
    """
    found: dict[str, dict[str, AccountRef]] = defaultdict(dict)
    committed: dict[str, bool] = defaultdict(lambda: True)
    for owner, code, id_, unit, book, type_, forbid, track, done in rows:
        found[owner][code] = AccountRef(
            id_, code, _ACCOUNT_TYPES[type_], unit_of(unit), book, owner, forbid, track
        )
        committed[owner] = committed[owner] and done
    if len(cache) > _LEDGER_CACHE_LIMIT:
        cache.clear()
    out: dict[str, CustomerLedger] = {}
    for account_id, a in accounts.items():
        if account_id in cache:
            out[account_id] = cache[account_id]
            continue
        refs = found.get(account_id, {})
        if all(code in refs for code in _LEDGER_CODES):
            out[account_id] = CustomerLedger(
                prepaid=refs["customer:prepaid"],
                bonus=refs["customer:bonus"],
                package_tokens=refs["customer:package_tokens"],
                deferred_packages=refs["deferred:packages"],
                deferred_subscriptions=refs["deferred:subscriptions"],
                receivable_unbilled=refs["receivable:unbilled"],
            )
            if committed[account_id]:
                cache[account_id] = out[account_id]
        else:
            out[account_id] = customer_ledger_of(session, a.id, a.parent_id, a.currency)
    return out
