"""The gateway path's second round trip: write a processed batch back.

One pipelined round trip writes, in the caller's transaction: the rating watermark (when the
batch priced later usage than it shows), claims of rejected records released, every changed
credit lot and quota window, every new or changed authorization, one ledger entry per book for
the whole batch (a posting per customer ledger account and per house account), and the usage
records, each naming its book's entry. ``balance.low`` events follow through the outbox.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
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
from plans.catalog import FailedRequestPolicy
from wallet.billing import Billing
from wallet.burn_order import BONUS, OVERAGE, PACKAGE, PAID
from wallet.burndown import Draw, WalletState
from wallet.ledger_accounts import CustomerLedger, HouseLedger, book_for, house_ledger
from wallet.models import Authorization, CreditLot, QuotaWindow
from wallet.outbox import emit
from wallet.records import UsageIn
from wallet.snapshot import AccountRow, AuthRow, Snapshot, driver_connection
from wallet.snapshot_sql import AUTH_COLUMNS


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
SELECT c, m, now() FROM json_to_recordset(%(watermarks)s::json) AS t(c text, m timestamptz)
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
FROM json_to_recordset(%(lots)s::json)
     AS v(id bigint, remaining numeric, reserved numeric, deferred numeric)
WHERE l.id = v.id AND l.id = ANY(%(lot_ids)s::bigint[])
"""

_WINDOWS = """
UPDATE wallet_quota_windows w SET window_start = v.s, window_end = v.e, used = v.u
FROM json_to_recordset(%(windows)s::json) AS v(id bigint, s timestamptz, e timestamptz, u bigint)
WHERE w.id = v.id AND w.id = ANY(%(window_ids)s::bigint[])
"""

#: columns an update of an authorization may change: all but these, and its ``updated_at``
_AUTH_FIXED = frozenset(
    {
        "id",
        "account_id",
        "reseller_account_id",
        "multi_capture",
        "token_grant",
        "hold_entry_id",
        "created_at",
    }
)
_AUTH_MUTABLE = (*(c for c in AUTH_COLUMNS if c not in _AUTH_FIXED), "updated_at")
_AUTHS = (
    "INSERT INTO wallet_authorizations"  # noqa: S608 (joins only the constant column names above)
    " SELECT * FROM json_populate_recordset(NULL::wallet_authorizations, %(auths)s::json)"
    " ON CONFLICT (id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _AUTH_MUTABLE)
)

_RECORDS = (
    "INSERT INTO wallet_usage_records"
    " SELECT * FROM json_populate_recordset(NULL::wallet_usage_records, %(records)s::json)"
)


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _recognize_packages(snap: Snapshot) -> dict[str, int]:
    """Deferred package money recognized by the tokens the batch consumed, per account.

    A package lot keeps ``price * unconsumed // granted`` deferred (unconsumed = remaining plus
    reserved), so rounding never drifts however the tokens are spent.
    """
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
    """One entry per book.

    Each account's debits (bonus, paid, overage to usage revenue; package tokens to consumed;
    deferred package money to package revenue), one posting per ledger account (a book's house
    accounts get one posting for the whole batch). Returns the entries, the entry id of each book
    and every ledger account they post to.
    """
    sums, refs = _postings(session, snap, recognized)
    entries: list[tuple[int, EntrySpec]] = []
    entry_of: dict[str, int] = {}
    for book, per in sorted(sums.items()):
        legs = tuple(Leg(i, Amount(atoms, refs[i].unit)) for i, atoms in per.items() if atoms)
        if not legs:
            continue
        entry_of[book] = entry_id = snap.entry_ids[len(entries)]
        entries.append(
            (
                entry_id,
                EntrySpec(
                    legs=legs,
                    description="usage batch",
                    effective_at=received_at,
                    metadata={"kind": "usage", "book": book},
                ),
            )
        )
    return entries, entry_of, refs


def _postings(
    session: Session, snap: Snapshot, recognized: Mapping[str, int]
) -> tuple[dict[str, dict[int, int]], dict[int, AccountRef]]:
    """The batch's net atoms per ledger account id, per book, and every ledger account moved."""
    sums: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    refs: dict[int, AccountRef] = {}
    houses: dict[tuple[str, str], HouseLedger] = {}
    for account_id in sorted(snap.wallets):
        w = snap.wallets[account_id]
        rec = recognized.get(account_id, 0)
        if not (w.package_tokens or rec or any(w.debits.values())):
            continue
        a = snap.accounts[account_id]
        book = book_for(a.parent_id)
        house = houses.get((book, a.currency))
        if house is None:
            house = houses[(book, a.currency)] = house_ledger(session, book, w.unit)
        per = sums[book]
        for debit, credit, atoms in _moves(w, snap.ledgers[account_id], house, rec):
            per[debit.id] += atoms
            per[credit.id] -= atoms
            refs[debit.id], refs[credit.id] = debit, credit
    return sums, refs


def _moves(
    w: WalletState, cust: CustomerLedger, house: HouseLedger, recognized: int
) -> list[tuple[AccountRef, AccountRef, int]]:
    """What one account's usage in the batch moves, as (debit, credit, atoms), in posting order."""
    moves = [
        (acct, house.revenue_usage, atoms)
        for kind, acct in (
            (BONUS, cust.bonus),
            (PAID, cust.prepaid),
            (OVERAGE, cust.receivable_unbilled),
        )
        if (atoms := w.debits.get(kind, 0))
    ]
    if w.package_tokens:
        moves.append((cust.package_tokens, house.tokens_consumed, w.package_tokens))
    if recognized:
        moves.append((cust.deferred_packages, house.revenue_packages, recognized))
    return moves


def _auth_row(auth: AuthRow, now: datetime) -> dict[str, Any]:
    res = auth.reservation
    return {
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
        "reserved": res.stored_lots(),
        "reserved_quota": res.stored_quota(),
        "reseller_overage": res.reseller_overage,
        "hold_entry_id": auth.hold_entry_id,
        "usage_record_id": auth.usage_record_id,
        "expires_at": auth.expires_at,
        "resolved_at": auth.resolved_at,
        "created_at": auth.created_at or now,
        "updated_at": now,
    }


def _record_row(c: ChargedRecord, received_at: datetime, entry_id: int | None) -> dict[str, Any]:
    r, tk, d = c.record, c.record.tokens, c.draw
    assert d is not None
    rating = c.billing.rating
    rd = c.reseller_draw
    row = {
        "id": r.id,
        "occurred_at": r.occurred_at,
        "received_at": received_at,
        "account_id": r.account_id,
        "currency": c.account.currency,
        "model": r.model,
        "input_tokens": tk.input_tokens,
        "output_tokens": tk.output_tokens,
        "cache_read_tokens": tk.cache_read_tokens,
        "cache_write_5m_tokens": tk.cache_write_5m_tokens,
        "cache_write_1h_tokens": tk.cache_write_1h_tokens,
        "reasoning_tokens": tk.reasoning_tokens,
        "cache_write_30m_tokens": tk.cache_write_30m_tokens,
        "cache_write_12h_tokens": tk.cache_write_12h_tokens,
        "input_audio_tokens": tk.input_audio_tokens,
        "input_image_tokens": tk.input_image_tokens,
        "output_audio_tokens": tk.output_audio_tokens,
        "output_image_tokens": tk.output_image_tokens,
        "batch": r.batch,
        "http_status": r.http_status,
        "finish_reason": r.finish_reason,
        "failure_kind": c.billing.failure,
        "policy_id": c.policy.id,
        "policy_version": c.policy.version,
        "price_source": c.price_source,
        "rate_card_id": c.card_id,
        "rated": c.billing.rated,
        "billed": d.charged,
        "credited": c.billing.credited,
        "reason": c.billing.reason,
        "drawn": d.summary(),
        "wholesale_billed": rd.charged if rd else None,
        "wholesale_drawn": rd.summary() if rd else None,
        "wholesale_credited": c.wholesale.credited if c.wholesale else None,
        "authorization_id": r.authorization_id,
        "entry_id": entry_id,
        "tags": dict(r.tags),
    }
    # optional columns only when set (absent keys are NULL): the writes stay as lean as before
    if tk.tool_calls:
        row["tool_calls"] = dict(tk.tool_calls)
    tier = rating.tier if rating else r.service_tier
    if tier is not None:
        row["service_tier"] = tier
    if r.upstream is not None:
        row["upstream"] = r.upstream
    return row


def write(
    session: Session,
    snap: Snapshot,
    *,
    charged: Sequence[ChargedRecord],
    unclaim: Sequence[str],
    priced_until: Mapping[str, datetime],
    received_at: datetime,
) -> None:
    """Write a processed batch back in one round trip (see the module docstring).

    The caller commits.

    Args:
        session: the batch's transaction.
        snap: what the batch read and changed in memory (wallets, lots, authorizations).
        charged: the records charged, with their draws and ledger legs.
        unclaim: record ids claimed by the batch but not charged, whose claims are dropped.
        priced_until: currency -> the latest usage instant the batch priced (the watermark).
        received_at: when the batch happened: the records' ``received_at`` and the entries'
            ``effective_at``.
    """
    params: dict[str, Any] = {}
    statements: list[str] = []
    _add_watermarks(snap, priced_until, statements, params)
    if unclaim:
        statements.append(_UNCLAIM)
        params["unclaim"] = list(unclaim)
    recognized = _recognize_packages(snap)
    _add_lots_and_windows(snap, statements, params)
    auths = [a for a in snap.auths.values() if a.dirty]
    if auths:
        statements.append(_AUTHS)
        params["auths"] = _json([_auth_row(a, received_at) for a in auths])
    entries, entry_of, refs = _entries(session, snap, recognized, received_at)
    if entries:
        statements += [APPEND_ENTRIES_SQL, APPEND_POSTINGS_SQL]
        params.update(append_entries(entries, refs))
    if charged:
        statements.append(_RECORDS)
        params["records"] = _json(
            [
                _record_row(c, received_at, entry_of.get(book_for(c.account.parent_id)))
                for c in charged
            ]
        )
    if statements:
        conn = driver_connection(session)
        with conn.pipeline():
            for sql in statements:
                conn.execute(sql, params)
    _low_balance_events(session, snap)
    _forget_orm_copies(session)


def _add_watermarks(
    snap: Snapshot,
    priced_until: Mapping[str, datetime],
    statements: list[str],
    params: dict[str, Any],
) -> None:
    """Move each currency's rating watermark up to the latest usage the batch priced."""
    marks = {}
    for currency, at in priced_until.items():
        mark = snap.priced_through.get(currency)
        if mark is None or at > mark:
            marks[currency] = at
    if marks:
        statements.append(_WATERMARKS)
        params["watermarks"] = _json([{"c": c, "m": at} for c, at in marks.items()])


def _add_lots_and_windows(snap: Snapshot, statements: list[str], params: dict[str, Any]) -> None:
    """Write back the lots and quota windows the batch changed."""
    lots = [
        snap.lots[i]
        for w in snap.wallets.values()
        for i in sorted(w.touched_lots)
        if i in snap.lots
    ]
    if lots:
        statements.append(_LOTS)
        params["lot_ids"] = [x.id for x in lots]
        params["lots"] = _json(
            [
                {
                    "id": x.id,
                    "remaining": x.remaining,
                    "reserved": x.reserved,
                    "deferred": x.deferred,
                }
                for x in lots
            ]
        )
    windows = [
        win for w in snap.wallets.values() for win in w.windows if win.id in w.touched_windows
    ]
    if windows:
        statements.append(_WINDOWS)
        params["window_ids"] = [x.id for x in windows]
        params["windows"] = _json(
            [{"id": x.id, "s": x.window_start, "e": x.window_end, "u": x.used} for x in windows]
        )


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
