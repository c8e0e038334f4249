"""The gateway path's second round trip: write a processed batch back.

One pipelined round trip writes, in the caller's transaction: the rating watermark (when the
batch priced later usage than it shows), claims of rejected records released, every changed
credit lot and quota window, every new or changed authorization, one ledger entry per book for
the whole batch (a posting per customer ledger account and per house account), and the usage
records, each naming its book's entry. ``balance.low`` events follow through the outbox.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from ledger.accounts import AccountRef
from ledger.amounts import Amount
from ledger.journal import (
    APPEND_ENTRIES_SQL,
    APPEND_POSTINGS_SQL,
    EntrySpec,
    Leg,
    append_entries,
)
from ledger.models import JournalEntry, LedgerAccount
from ledger.units import TOKENS
from plans.catalog import FailedRequestPolicy
from wallet.billing import Billing
from wallet.burn import BONUS, OVERAGE, PACKAGE, PAID
from wallet.burndown import Draw
from wallet.chart import HouseLedger, book_for, house_ledger
from wallet.models import Authorization, CreditLot, QuotaWindow
from wallet.outbox import emit
from wallet.records import UsageIn
from wallet.snapshot import AccountRow, AuthRow, Snapshot, cursor, driver_connection


@dataclass
class ChargedRecord:
    """A record charged by the batch, with how it was priced and paid."""

    record: UsageIn
    account: AccountRow
    billing: Billing
    price_source: str
    card_id: str | None
    policy: FailedRequestPolicy
    wholesale: Billing | None = None
    draw: Draw | None = None
    reseller_draw: Draw | None = None


_WATERMARKS = """
INSERT INTO rating_watermarks (currency, priced_through_at, updated_at)
SELECT c, m, now() FROM unnest(%(wm_currencies)s::text[], %(wm_marks)s::timestamptz[]) AS t(c, m)
ON CONFLICT (currency) DO UPDATE
SET priced_through_at = greatest(rating_watermarks.priced_through_at, excluded.priced_through_at),
    updated_at = excluded.updated_at
WHERE rating_watermarks.priced_through_at IS NULL
   OR rating_watermarks.priced_through_at < excluded.priced_through_at
"""

_UNCLAIM = "DELETE FROM wallet_usage_claims WHERE id = ANY(%(unclaim)s::text[])"

_LOTS = """
UPDATE wallet_credit_lots l
SET remaining = v.remaining, reserved = v.reserved, deferred = v.deferred
FROM unnest(%(lot_ids)s::bigint[], %(lot_remaining)s::numeric[], %(lot_reserved)s::numeric[],
            %(lot_deferred)s::numeric[]) AS v(id, remaining, reserved, deferred)
WHERE l.id = v.id
"""

_WINDOWS = """
UPDATE wallet_quota_windows w SET window_start = v.s, window_end = v.e, used = v.u
FROM unnest(%(win_ids)s::bigint[], %(win_starts)s::timestamptz[], %(win_ends)s::timestamptz[],
            %(win_used)s::bigint[]) AS v(id, s, e, u)
WHERE w.id = v.id
"""

_AUTH_FIELDS: tuple[tuple[str, str], ...] = (
    ("id", "text"),
    ("account_id", "text"),
    ("reseller_account_id", "text"),
    ("model", "text"),
    ("multi_capture", "boolean"),
    ("token_grant", "boolean"),
    ("status", "text"),
    ("decline_code", "text"),
    ("requested", "numeric"),
    ("held_money", "numeric"),
    ("held_tokens", "bigint"),
    ("captured_money", "numeric"),
    ("captured_tokens", "bigint"),
    ("released_money", "numeric"),
    ("released_tokens", "bigint"),
    ("captures", "integer"),
    ("final", "boolean"),
    ("plan_covered", "boolean"),
    ("overage", "numeric"),
    ("reserved", "jsonb"),
    ("reserved_quota", "jsonb"),
    ("reseller_overage", "numeric"),
    ("usage_record_id", "text"),
    ("expires_at", "timestamptz"),
    ("resolved_at", "timestamptz"),
    ("created_at", "timestamptz"),
)
_AUTHS = (
    f"INSERT INTO wallet_authorizations ({', '.join(n for n, _ in _AUTH_FIELDS)}, updated_at)"
    " SELECT *, now() FROM unnest("
    + ", ".join(
        f"%(auth_{n})s::text[]::jsonb[]" if t == "jsonb" else f"%(auth_{n})s::{t}[]"
        for n, t in _AUTH_FIELDS
    )
    + ") ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(
        f"{n} = excluded.{n}"
        for n, _ in _AUTH_FIELDS
        if n not in ("id", "account_id", "reseller_account_id", "multi_capture", "created_at")
    )
    + ", updated_at = now()"
)

_RECORD_FIELDS: tuple[tuple[str, str], ...] = (
    ("id", "text"),
    ("occurred_at", "timestamptz"),
    ("received_at", "timestamptz"),
    ("account_id", "text"),
    ("currency", "text"),
    ("model", "text"),
    ("input_tokens", "bigint"),
    ("output_tokens", "bigint"),
    ("cache_read_tokens", "bigint"),
    ("cache_write_5m_tokens", "bigint"),
    ("cache_write_1h_tokens", "bigint"),
    ("reasoning_tokens", "bigint"),
    ("batch", "boolean"),
    ("http_status", "integer"),
    ("finish_reason", "text"),
    ("failure_kind", "text"),
    ("policy_id", "text"),
    ("policy_version", "integer"),
    ("price_source", "text"),
    ("rate_card_id", "text"),
    ("rated", "numeric"),
    ("billed", "numeric"),
    ("credited", "numeric"),
    ("reason", "text"),
    ("drawn", "jsonb"),
    ("wholesale_billed", "numeric"),
    ("wholesale_drawn", "jsonb"),
    ("wholesale_credited", "numeric"),
    ("authorization_id", "text"),
    ("entry_id", "bigint"),
    ("tags", "jsonb"),
)
_RECORDS = (
    f"INSERT INTO wallet_usage_records ({', '.join(n for n, _ in _RECORD_FIELDS)})"
    " SELECT * FROM unnest("
    + ", ".join(
        f"%(rec_{n})s::text[]::jsonb[]" if t == "jsonb" else f"%(rec_{n})s::{t}[]"
        for n, t in _RECORD_FIELDS
    )
    + ")"
)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), default=str)


def _recognize_packages(snap: Snapshot) -> dict[str, int]:
    """Deferred package money recognized by the tokens the batch consumed, per account: a
    package lot keeps ``price * unconsumed // granted`` deferred (unconsumed = remaining plus
    reserved), so rounding never drifts however the tokens are spent."""
    recognized: dict[str, int] = defaultdict(int)
    for w in snap.wallets.values():
        for lot in w.lots:
            if lot.kind == PACKAGE and lot.id in w.touched_lots and lot.granted:
                after = lot.price * (lot.remaining + lot.reserved) // lot.granted
                recognized[lot.account_id] += lot.deferred - after
                lot.deferred = after
    return recognized


def _entries(
    session: Session, snap: Snapshot, recognized: Mapping[str, int], received_at: datetime
) -> tuple[list[tuple[int, EntrySpec]], dict[str, int], dict[int, AccountRef]]:
    """One entry per book: each account's debits (bonus, paid, overage to usage revenue;
    package tokens to consumed; deferred package money to package revenue). Returns the
    entries, the entry id of each book and every ledger account they post to."""
    legs: dict[str, list[Leg]] = defaultdict(list)
    refs: dict[int, AccountRef] = {}
    houses: dict[tuple[str, str], HouseLedger] = {}
    for account_id in sorted(snap.wallets):
        w = snap.wallets[account_id]
        a = snap.accounts[account_id]
        rec = recognized.get(account_id, 0)
        if not (any(w.debits.values()) or w.package_tokens or rec):
            continue
        cust = snap.ledgers[account_id]
        book = book_for(a.parent_id)
        house = houses.get((book, a.currency))
        if house is None:
            house = houses[(book, a.currency)] = house_ledger(session, book, w.unit)
        revenue = 0
        for kind, acct in (
            (BONUS, cust.bonus),
            (PAID, cust.prepaid),
            (OVERAGE, cust.receivable_unbilled),
        ):
            atoms = w.debits.get(kind, 0)
            if atoms:
                legs[book].append(Leg(acct.id, Amount(atoms, w.unit)))
                refs[acct.id] = acct
                revenue += atoms
        if revenue:
            legs[book].append(Leg(house.revenue_usage.id, Amount(-revenue, w.unit)))
            refs[house.revenue_usage.id] = house.revenue_usage
        if w.package_tokens:
            t = Amount(w.package_tokens, TOKENS)
            legs[book] += [Leg(cust.package_tokens.id, t), Leg(house.tokens_consumed.id, -t)]
            refs[cust.package_tokens.id] = cust.package_tokens
            refs[house.tokens_consumed.id] = house.tokens_consumed
        if rec:
            m = Amount(rec, w.unit)
            legs[book] += [Leg(cust.deferred_packages.id, m), Leg(house.revenue_packages.id, -m)]
            refs[cust.deferred_packages.id] = cust.deferred_packages
            refs[house.revenue_packages.id] = house.revenue_packages
    entry_of: dict[str, int] = {}
    entries: list[tuple[int, EntrySpec]] = []
    for book, book_legs in sorted(legs.items()):
        entry_of[book] = entry_id = snap.entry_ids[len(entries)]
        entries.append(
            (
                entry_id,
                EntrySpec(
                    legs=tuple(_merge(book_legs)),
                    description="usage batch",
                    effective_at=received_at,
                    metadata={"kind": "usage", "book": book},
                ),
            )
        )
    return entries, entry_of, refs


def _merge(legs: Sequence[Leg]) -> list[Leg]:
    """One leg per ledger account (house accounts get one posting per entry, not per customer)."""
    total: dict[int, Amount] = {}
    for leg in legs:
        prev = total.get(leg.account_id)
        total[leg.account_id] = leg.amount if prev is None else prev + leg.amount
    return [Leg(k, v) for k, v in total.items() if not v.is_zero()]


def _columns(
    names: Sequence[str], prefix: str, rows: Sequence[Sequence[Any]]
) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {f"{prefix}{n}": [] for n in names}
    keys = list(cols)
    for row in rows:
        for key, value in zip(keys, row, strict=True):
            cols[key].append(value)
    return cols


def _auth_row(auth: AuthRow) -> list[Any]:
    res = auth.reservation
    values = {
        "id": auth.id,
        "account_id": auth.account_id,
        "reseller_account_id": auth.reseller_account_id,
        "model": auth.model,
        "multi_capture": auth.multi_capture,
        "token_grant": auth.token_grant,
        "status": auth.status,
        "decline_code": auth.decline_code,
        "requested": auth.requested,
        "held_money": auth.held_money,
        "held_tokens": auth.held_tokens,
        "captured_money": auth.captured_money,
        "captured_tokens": auth.captured_tokens,
        "released_money": auth.released_money,
        "released_tokens": auth.released_tokens,
        "captures": auth.captures,
        "final": auth.final,
        "plan_covered": auth.plan_covered,
        "overage": res.overage,
        "reserved": _json(res.stored_lots()),
        "reserved_quota": _json(res.stored_quota()),
        "reseller_overage": res.reseller_overage,
        "usage_record_id": auth.usage_record_id,
        "expires_at": auth.expires_at,
        "resolved_at": auth.resolved_at,
        "created_at": auth.created_at,
    }
    return [values[n] for n, _ in _AUTH_FIELDS]


def _record_row(c: ChargedRecord, received_at: datetime, entry_id: int | None) -> list[Any]:
    r, tk, d = c.record, c.record.tokens, c.draw
    assert d is not None
    rd = c.reseller_draw
    return [
        r.id,
        r.occurred_at,
        received_at,
        r.account_id,
        c.account.currency,
        r.model,
        tk.input_tokens,
        tk.output_tokens,
        tk.cache_read_tokens,
        tk.cache_write_5m_tokens,
        tk.cache_write_1h_tokens,
        tk.reasoning_tokens,
        r.batch,
        r.http_status,
        r.finish_reason,
        c.billing.failure,
        c.policy.id,
        c.policy.version,
        c.price_source,
        c.card_id,
        c.billing.rated,
        d.charged,
        c.billing.credited,
        c.billing.reason,
        _json(d.summary()),
        rd.charged if rd else None,
        _json(rd.summary()) if rd else None,
        c.wholesale.credited if c.wholesale else None,
        r.authorization_id,
        entry_id,
        _json(dict(r.tags)),
    ]


def write(
    session: Session,
    snap: Snapshot,
    *,
    charged: Sequence[ChargedRecord],
    unclaim: Sequence[str],
    priced_until: Mapping[str, datetime],
    received_at: datetime,
) -> None:
    """Write a processed batch back in one round trip (see the module docstring); the caller
    commits.

    Args:
        received_at: when the batch happened: the records' ``received_at`` and the entries'
            ``effective_at``.
    """
    params: dict[str, Any] = {}
    statements: list[str] = []
    marks = {}
    for currency, at in priced_until.items():
        mark = snap.priced_through.get(currency)
        if mark is None or at > mark:
            marks[currency] = at
    if marks:
        statements.append(_WATERMARKS)
        params["wm_currencies"], params["wm_marks"] = list(marks), list(marks.values())
    if unclaim:
        statements.append(_UNCLAIM)
        params["unclaim"] = list(unclaim)
    recognized = _recognize_packages(snap)
    lots = [
        snap.lots[i]
        for w in snap.wallets.values()
        for i in sorted(w.touched_lots)
        if i in snap.lots
    ]
    if lots:
        statements.append(_LOTS)
        params["lot_ids"] = [lot.id for lot in lots]
        params["lot_remaining"] = [lot.remaining for lot in lots]
        params["lot_reserved"] = [lot.reserved for lot in lots]
        params["lot_deferred"] = [lot.deferred for lot in lots]
    windows = [
        win for w in snap.wallets.values() for win in w.windows if win.id in w.touched_windows
    ]
    if windows:
        statements.append(_WINDOWS)
        params["win_ids"] = [win.id for win in windows]
        params["win_starts"] = [win.window_start for win in windows]
        params["win_ends"] = [win.window_end for win in windows]
        params["win_used"] = [win.used for win in windows]
    auths = [a for a in snap.auths.values() if a.dirty]
    if auths:
        statements.append(_AUTHS)
        params.update(
            _columns([n for n, _ in _AUTH_FIELDS], "auth_", [_auth_row(a) for a in auths])
        )
    entries, entry_of, refs = _entries(session, snap, recognized, received_at)
    if entries:
        statements += [APPEND_ENTRIES_SQL, APPEND_POSTINGS_SQL]
        params.update(append_entries(entries, refs))
    if charged:
        statements.append(_RECORDS)
        rows = [
            _record_row(c, received_at, entry_of.get(book_for(c.account.parent_id)))
            for c in charged
        ]
        params.update(_columns([n for n, _ in _RECORD_FIELDS], "rec_", rows))
    if statements:
        conn = driver_connection(session)
        with conn.pipeline():
            for sql in statements:
                cursor(conn).execute(sql, params)
    _low_balance_events(session, snap)
    _forget_orm_copies(session)


def _low_balance_events(session: Session, snap: Snapshot) -> None:
    """``balance.low`` for every account whose spendable money crossed its threshold."""
    for account_id, w in snap.wallets.items():
        a = snap.accounts[account_id]
        if a.low_balance_threshold is None or not w.touched_lots:
            continue
        after = w.money_left()
        if w.money_before >= a.low_balance_threshold > after:
            emit(
                session,
                account_id=account_id,
                type="balance.low",
                data={
                    "account_id": account_id,
                    "available": {"amount": Amount(after, w.unit).format(), "currency": a.currency},
                    "threshold": {
                        "amount": Amount(a.low_balance_threshold, w.unit).format(),
                        "currency": a.currency,
                    },
                },
            )


def _forget_orm_copies(session: Session) -> None:
    """Rows were changed under the ORM's feet: expire what the session may hold of them."""
    for obj in list(session.identity_map.values()):
        if isinstance(obj, CreditLot | QuotaWindow | Authorization | LedgerAccount | JournalEntry):
            session.expire(obj)
