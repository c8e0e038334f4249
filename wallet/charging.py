"""Charging usage: the gateway hot path.

One call charges a batch of records in one transaction:

1. claim the record ids (``INSERT ... ON CONFLICT DO NOTHING``); ids already claimed are
   duplicates and return their first result;
2. rate each record at the account's price in force at ``occurred_at`` (integer fast path);
3. apply the account's failed-request policy: rated, billed and credited amounts and a reason;
4. burn down in the account's order (plan quota, packages, bonus, paid, overage within the
   credit limit) against the lots locked for the batch, record by record, in request order;
   a sub-account's record is also drawn from its reseller's float at the wholesale price;
5. post one ledger entry per account for the whole batch, write the records and the lots in
   bulk. A record that cannot be paid is rejected and its id stays unclaimed (retryable).

Lock order (``wallet/burndown.py``): the account rows (with the resellers of sub-accounts) by id,
the authorizations the records name, credit lots by id, quota windows, ledger accounts by id.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT, NUMERIC, TEXT
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.errors import DomainError
from ledger.journal import EntrySpec, Leg, post_entries, void_specs
from ledger.units import TOKENS
from ledger.units import unit as unit_of
from plans.catalog import FailedRequestPolicy, get_failed_request_policy
from plans.errors import InvalidUsage
from plans.prices import ModelPrice
from plans.pricing import PriceContext, advance_priced_through, standing_contract
from wallet.accounts import EVERYTHING, Scope, account_parents, lock_accounts
from wallet.burn import BONUS, OVERAGE, PACKAGE, PAID
from wallet.burndown import (
    MONEY_SOURCES,
    Draw,
    WalletState,
    apply_draw,
    draw,
    give_back,
    load_wallets,
)
from wallet.chart import (
    CustomerLedger,
    HouseLedger,
    book_of,
    customer_ledger,
    house_ledger,
)
from wallet.gate import enter_shared
from wallet.lots import check_low_balance
from wallet.maintenance import DEFAULT_RETENTION
from wallet.models import Account, Authorization, CreditLot, UsageRecord
from wallet.normalize import Tokens, failure_kind

MAX_BATCH = 1000
#: How far ahead of the server clock a record's ``occurred_at`` may be (gateway clock skew).
MAX_CLOCK_SKEW = timedelta(minutes=5)
#: The watermark that orders pricing against catalog changes moves in steps of this many seconds,
#: so only about one batch a minute takes its row lock (the others take a shared key lock).
WATERMARK_STEP_SECONDS = 60


@dataclass(frozen=True, slots=True)
class UsageIn:
    """One normalized usage record."""

    id: str
    account_id: str
    model: str
    occurred_at: datetime
    tokens: Tokens
    batch: bool = False
    http_status: int = 200
    finish_reason: str | None = None
    truncated: bool = False
    authorization_id: str | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UsageResult:
    """The outcome of one record: ``charged``, ``duplicate`` or ``rejected``."""

    id: str
    status: str
    billed: Amount | None = None
    credited: Amount | None = None
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record refused before charging (bad shape); carried through to keep request order."""

    id: str
    reason: str
    detail: str


# -- rating, integer fast path -----------------------------------------------------------

_COMPONENTS = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output", "reasoning")


@lru_cache(maxsize=4096)
def _atoms_per_token(price: ModelPrice) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Per-token atoms of each component, full and batch-discounted; None if not integral."""
    per_mtok = (
        price.input_per_mtok,
        price.cache_read_per_mtok,
        price.cache_write_5m_per_mtok,
        price.cache_write_1h_per_mtok,
        price.output_per_mtok,
        price.reasoning_per_mtok,
    )
    full, batch = [], []
    keep = Fraction(100 - Fraction(price.batch_discount_pct), 100)
    for p in per_mtok:
        atoms = Fraction(p) * 10**12  # 10**18 atoms per unit / 10**6 tokens per Mtok
        discounted = atoms * keep
        if atoms.denominator != 1 or discounted.denominator != 1:
            return None
        full.append(atoms.numerator)
        batch.append(discounted.numerator)
    return tuple(full), tuple(batch)


def _counts(t: Tokens) -> tuple[int, ...]:
    return (
        t.input_tokens,
        t.cache_read_tokens,
        t.cache_write_5m_tokens,
        t.cache_write_1h_tokens,
        t.output_tokens - t.reasoning_tokens,
        t.reasoning_tokens,
    )


def rate_atoms(tokens: Tokens, price: ModelPrice, *, batch: bool) -> tuple[int, int]:
    """(total atoms, atoms of the output and reasoning components) of one record, exactly.

    Integer arithmetic on per-token atom prices; a price whose per-token atoms are not whole
    (the catalog refuses those) falls back to exact fractions.
    """
    counts = _counts(tokens)
    table = _atoms_per_token(price)
    if table is None:
        keep = Fraction(100 - Fraction(price.batch_discount_pct), 100) if batch else Fraction(1)
        per_mtok = (
            price.input_per_mtok,
            price.cache_read_per_mtok,
            price.cache_write_5m_per_mtok,
            price.cache_write_1h_per_mtok,
            price.output_per_mtok,
            price.reasoning_per_mtok,
        )
        parts = [Fraction(p) * 10**12 * keep * c for p, c in zip(per_mtok, counts, strict=True)]
        exact_total, exact_output = sum(parts, Fraction(0)), parts[4] + parts[5]
        if exact_total.denominator != 1 or exact_output.denominator != 1:
            raise InvalidUsage("this price cannot rate the record exactly; fix the rate card")
        return exact_total.numerator, exact_output.numerator
    per_token = table[1] if batch else table[0]
    total: int = sum(c * a for c, a in zip(counts, per_token, strict=True))
    output: int = counts[4] * per_token[4] + counts[5] * per_token[5]
    return total, output


# -- policy --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Billing:
    """Rated, billed and credited atoms of one record, with its reason code."""

    rated: int
    billed: int
    credited: int
    billable_tokens: int
    failure: str | None
    reason: str | None


def apply_policy(
    record: UsageIn, rated: int, output_atoms: int, policy: FailedRequestPolicy
) -> Billing:
    """Apply the failed-request policy: billed, not billed, or output not billed."""
    kind = failure_kind(
        http_status=record.http_status,
        finish_reason=record.finish_reason,
        truncated=record.truncated,
        output_tokens=record.tokens.output_tokens,
    )
    rule = policy.rules.get(kind, "billed") if kind else "billed"
    total_tokens = record.tokens.total
    if rule == "not_billed":
        return Billing(rated, 0, rated, 0, kind, f"{kind}:not_billed")
    if rule == "output_not_billed":
        return Billing(
            rated,
            rated - output_atoms,
            output_atoms,
            total_tokens - record.tokens.output_tokens,
            kind,
            f"{kind}:output_not_billed",
        )
    return Billing(rated, rated, 0, total_tokens, kind, f"{kind}:billed" if kind else None)


# -- the batch -----------------------------------------------------------------------------


_CLAIM = text(
    "INSERT INTO wallet_usage_claims (id, account_id)"
    " SELECT * FROM unnest(:ids, :accounts) ON CONFLICT DO NOTHING RETURNING id"
).bindparams(bindparam("ids", type_=ARRAY(TEXT)), bindparam("accounts", type_=ARRAY(TEXT)))

_UNCLAIM = text("DELETE FROM wallet_usage_claims WHERE id = ANY(:ids)").bindparams(
    bindparam("ids", type_=ARRAY(TEXT))
)

_UPDATE_LOTS = text(
    "UPDATE wallet_credit_lots l SET remaining = v.remaining, deferred = v.deferred"
    " FROM unnest(:ids, :remaining, :deferred) AS v(id, remaining, deferred) WHERE l.id = v.id"
).bindparams(
    bindparam("ids", type_=ARRAY(BIGINT)),
    bindparam("remaining", type_=ARRAY(NUMERIC(38, 0))),
    bindparam("deferred", type_=ARRAY(NUMERIC(38, 0))),
)


def _previous_results(session: Session, ids: Sequence[str]) -> dict[str, UsageRecord]:
    if not ids:
        return {}
    rows = session.scalars(select(UsageRecord).where(UsageRecord.id.in_(ids))).all()
    return {r.id: r for r in rows}


def _advance_watermarks(session: Session, latest: Mapping[str, datetime]) -> None:
    for code, at in sorted(latest.items()):
        step = WATERMARK_STEP_SECONDS
        bucket = datetime.fromtimestamp((int(at.timestamp()) // step + 1) * step, tz=at.tzinfo)
        advance_priced_through(session, code, bucket)


@dataclass
class _Priced:
    record: UsageIn
    wallet: WalletState
    billing: Billing
    price_source: str
    card_id: str | None
    policy: FailedRequestPolicy
    wholesale: Billing | None = None
    draw: Draw | None = None
    reseller_draw: Draw | None = None
    captured_hold: int | None = None


def charge_batch(
    session: Session,
    records: Sequence[UsageIn | Rejected],
    *,
    now: datetime | None = None,
    scope: Scope = EVERYTHING,
    retention: timedelta = DEFAULT_RETENTION,
) -> list[UsageResult]:
    """Charge a batch of usage records; see the module docstring. The caller commits.

    Args:
        retention: records that occurred longer ago than this are refused (``usage_too_old``):
            their ids may no longer be remembered, so exactly-once could not be promised.

    Returns:
        One result per input record, in the same order.
    """
    received = now or utcnow()  # the age window; the charge's own instant comes later
    oldest, latest = received - retention, received + MAX_CLOCK_SKEW
    results: dict[int, UsageResult] = {}
    valid: list[tuple[int, UsageIn]] = []
    seen: dict[str, int] = {}
    for i, r in enumerate(records):
        if isinstance(r, Rejected):
            results[i] = UsageResult(r.id, "rejected", reason=r.reason, detail=r.detail)
        elif r.occurred_at < oldest:
            results[i] = UsageResult(
                r.id,
                "rejected",
                reason="usage_too_old",
                detail=f"occurred_at {r.occurred_at.isoformat()} is more than"
                f" {retention.days} days ago; usage that old is no longer accepted",
            )
        elif r.occurred_at > latest:
            results[i] = UsageResult(
                r.id,
                "rejected",
                reason="occurred_in_future",
                detail=f"occurred_at {r.occurred_at.isoformat()} is ahead of the server clock"
                f" ({received.isoformat()}) by more than {MAX_CLOCK_SKEW}; check the gateway clock",
            )
        elif r.id in seen:
            results[i] = UsageResult(
                r.id,
                "rejected",
                reason="duplicate_in_batch",
                detail=f"record id {r.id} appears twice in this batch",
            )
        else:
            seen[r.id] = i
            valid.append((i, r))
    if valid:
        _charge_valid(session, valid, results, now, scope)
    return [results[i] for i in range(len(records))]


def _claim(
    session: Session,
    valid: list[tuple[int, UsageIn]],
    results: dict[int, UsageResult],
) -> list[tuple[int, UsageIn]]:
    """Claim the ids (in id order, so concurrent batches never deadlock on claims); answer
    duplicates with their first result. Returns the records to charge."""
    pairs = sorted((r.id, r.account_id) for _, r in valid)
    claimed = set(
        session.execute(
            _CLAIM, {"ids": [p[0] for p in pairs], "accounts": [p[1] for p in pairs]}
        ).scalars()
    )
    previous = _previous_results(session, [r.id for _, r in valid if r.id not in claimed])
    todo: list[tuple[int, UsageIn]] = []
    for i, r in valid:
        if r.id in claimed:
            todo.append((i, r))
            continue
        prev = previous.get(r.id)
        if prev is not None and prev.account_id != r.account_id:
            results[i] = UsageResult(
                r.id,
                "rejected",
                reason="id_conflict",
                detail=f"record id {r.id} was already used by another account; ids must be unique",
            )
        elif prev is None:  # claimed by a batch that is still being written: retry later
            results[i] = UsageResult(
                r.id,
                "rejected",
                reason="in_progress",
                detail="this record id is being charged by another request",
            )
        else:
            unit = unit_of(prev.currency)
            results[i] = UsageResult(
                r.id,
                "duplicate",
                Amount(prev.billed, unit),
                Amount(prev.credited, unit),
                prev.reason,
            )
    return todo


def _charge_valid(
    session: Session,
    valid: list[tuple[int, UsageIn]],
    results: dict[int, UsageResult],
    now: datetime | None,
    scope: Scope,
) -> None:
    todo = _claim(session, valid, results)
    if not todo:
        return
    ids = {r.account_id for _, r in todo}
    parents = account_parents(session, ids)
    # The usage gate (wallet/gate.py): received_at is read under a shared lock per billing tree
    # (taken before any row lock), so the month-end close has an exact cut-off without
    # touching the records.
    gate_at = enter_shared(session, {parents[i] or i for i in ids if i in parents})
    received = now or gate_at
    unclaim: list[str] = []

    def reject(i: int, r: UsageIn, reason: str | None, detail: str) -> None:
        results[i] = UsageResult(r.id, "rejected", reason=reason, detail=detail)
        unclaim.append(r.id)

    # every account of the batch, with the resellers of sub-accounts, locked in id order
    locked = lock_accounts(
        session, set(parents) | {p for p in parents.values() if p}, with_parents=False
    )
    latest: dict[str, datetime] = {}
    earliest: dict[str, datetime] = {}
    for _, r in todo:
        a = locked.get(r.account_id)
        if a is not None and scope.allows(a):
            latest[a.currency] = max(latest.get(a.currency, r.occurred_at), r.occurred_at)
            earliest[a.currency] = min(earliest.get(a.currency, r.occurred_at), r.occurred_at)
    _advance_watermarks(session, latest)
    holds = _lock_authorizations(session, todo, received)
    reserved_lots = [lot_id for a in holds.values() for lot_id, _ in a.reserved]
    wallets = load_wallets(session, locked.values(), reserved_lots)
    lots_by_id = {lot.id: lot for w in wallets.values() for lot in w.lots}
    pricing = {
        code: PriceContext.load(
            session, code, account_ids=list(locked), since=earliest[code], until=latest[code]
        )
        for code in sorted(latest)
    }
    standing = {a.id: standing_contract(a.id, a.discounts) for a in locked.values() if a.discounts}
    policies: dict[str | None, FailedRequestPolicy] = {}

    def policy_of(account: Account) -> FailedRequestPolicy:
        pid = account.failed_request_policy_id
        if pid not in policies:
            policies[pid] = get_failed_request_policy(session, pid)
        return policies[pid]

    priced: list[tuple[int, _Priced]] = []
    for i, r in todo:
        a = locked.get(r.account_id)
        if a is None or not scope.allows(a):  # an account outside the caller's scope looks unknown
            reject(i, r, "unknown_account", f"account {r.account_id} does not exist")
            continue
        w = wallets[a.id]
        try:
            resolved = pricing[a.currency].resolve(
                model=r.model,
                at=r.occurred_at,
                account_id=a.id,
                reseller_account_id=a.parent_id,
                standing=standing.get(a.id),
            )
            policy = policy_of(a)
            rated, out_atoms = rate_atoms(r.tokens, resolved.price, batch=r.batch)
            p = _Priced(
                r,
                w,
                apply_policy(r, rated, out_atoms, policy),
                resolved.source.value,
                resolved.card_id,
                policy,
            )
            if a.parent_id and resolved.wholesale is not None:
                # the operator bills its reseller under the reseller's own policy
                wr, wout = rate_atoms(r.tokens, resolved.wholesale.price, batch=r.batch)
                p.wholesale = apply_policy(r, wr, wout, policy_of(locked[a.parent_id]))
        except DomainError as exc:
            reject(i, r, exc.code, exc.detail)
            continue
        priced.append((i, p))
    # burn down, record by record, in request order
    charged: list[tuple[int, _Priced]] = []
    for i, p in priced:
        r, w = p.record, p.wallet
        hold = holds.get(r.authorization_id or "")
        if hold is not None and hold.account_id == r.account_id:
            del holds[hold.id]  # a hold is captured once; a second record pays normally
            _capture(p, hold, wallets, lots_by_id, received)
        else:
            refused = _pay(p, wallets)
            if refused is not None:
                reject(i, r, *refused)
                continue
        charged.append((i, p))
        assert p.draw is not None
        results[i] = UsageResult(
            r.id,
            "charged",
            Amount(p.draw.charged, w.unit),
            Amount(p.billing.credited, w.unit),
            p.billing.reason,
        )
    if unclaim:
        session.execute(_UNCLAIM, {"ids": unclaim})
    if charged:
        _write(session, charged, wallets, received)


def _pay(p: _Priced, wallets: Mapping[str, WalletState]) -> tuple[str, str] | None:
    """Pay a record that names no open hold; returns ``(refusal code, message)`` when it cannot
    be paid (then nothing is taken)."""
    r, w = p.record, p.wallet
    d, _, refusal = draw(w, r.model, p.billing.billed, p.billing.billable_tokens, r.occurred_at)
    if d is None:
        code = refusal or "insufficient_funds"
        return code, _refusal_detail(code, w, p.billing.billed)
    rd: Draw | None = None
    if p.wholesale is not None and p.wholesale.billed:
        rw = wallets[w.account.parent_id or ""]
        rd, _, _ = draw(
            rw,
            r.model,
            p.wholesale.billed,
            p.wholesale.billable_tokens,
            r.occurred_at,
            sources=MONEY_SOURCES,
        )
        if rd is None:
            return (
                "reseller_float_exhausted",
                "the reseller's float cannot cover this usage at wholesale",
            )
        apply_draw(rw, rd, r.occurred_at)
    apply_draw(w, d, r.occurred_at)
    p.draw, p.reseller_draw = d, rd
    return None


def _capped(billing: Billing, unpaid: int) -> Billing:
    """What the hold could not pay is credited, not billed (``capped_at_hold``)."""
    if not unpaid:
        return billing
    return replace(
        billing,
        billed=billing.billed - unpaid,
        credited=billing.credited + unpaid,
        reason="capped_at_hold",
    )


def _capture(
    p: _Priced,
    hold: Authorization,
    wallets: Mapping[str, WalletState],
    lots_by_id: Mapping[int, CreditLot],
    at: datetime,
) -> None:
    """Pay a record from its hold: give the reservation back, then draw the actual amount from
    what the hold reserved plus the credit limit's headroom; what that cannot pay is credited
    (the charge never exceeds the hold unless the credit limit covers the difference). The
    same for the reseller's float at wholesale."""
    r, w = p.record, p.wallet
    give_back(hold, wallets, lots_by_id=lots_by_id)
    limits: dict[int, int] = defaultdict(int)
    for lot_id, atoms in hold.reserved:
        limits[lot_id] += atoms

    def room(lot: CreditLot) -> int:
        return limits.get(lot.id, 0)

    d, unpaid, _ = draw(
        w,
        r.model,
        p.billing.billed,
        p.billing.billable_tokens,
        r.occurred_at,
        room=room,
        use_plan=hold.plan_covered,
        partial=True,
    )
    assert d is not None
    p.billing = _capped(p.billing, unpaid)
    if p.wholesale is not None and p.wholesale.billed:
        rw = wallets[w.account.parent_id or ""]
        rd, wunpaid, _ = draw(
            rw,
            r.model,
            p.wholesale.billed,
            p.wholesale.billable_tokens,
            r.occurred_at,
            sources=MONEY_SOURCES,
            room=room,
            partial=True,
        )
        assert rd is not None
        p.wholesale = _capped(p.wholesale, wunpaid)
        apply_draw(rw, rd, r.occurred_at)
        p.reseller_draw = rd
    apply_draw(w, d, r.occurred_at)
    p.draw = d
    p.captured_hold = hold.hold_entry_id  # its pending entry is released with the batch
    hold.status, hold.usage_record_id, hold.resolved_at = "captured", r.id, at


def _lock_authorizations(
    session: Session, todo: Sequence[tuple[int, UsageIn]], at: datetime
) -> dict[str, Authorization]:
    """Lock the approved, unexpired holds the records name (after the account rows)."""
    ids = sorted({r.authorization_id for _, r in todo if r.authorization_id})
    if not ids:
        return {}
    rows = session.scalars(
        select(Authorization)
        .where(Authorization.id.in_(ids))
        .order_by(Authorization.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    return {a.id: a for a in rows if a.status == "approved" and a.expires_at > at}


def _refusal_detail(refusal: str, w: WalletState, billed: int) -> str:
    if refusal == "plan_quota_exhausted":
        return "the plan's quota is used up and the plan blocks further requests until it resets"
    return (
        f"account {w.account.id} cannot cover {Amount(billed, w.unit)}"
        f" (prepaid credit and credit limit exhausted)"
    )


def _low_balance_events(session: Session, touched: Iterable[WalletState]) -> None:
    """``balance.low`` for every account whose spendable money crossed its threshold."""
    for w in touched:
        if w.account.low_balance_threshold is not None:
            check_low_balance(session, w.account, Amount(w.money_before, w.unit))


def _write(
    session: Session,
    charged: list[tuple[int, _Priced]],
    wallets: dict[str, WalletState],
    received: datetime,
) -> None:
    ledgers: dict[str, CustomerLedger] = {}
    houses: dict[tuple[str, str], HouseLedger] = {}
    specs: list[EntrySpec] = []
    touched = [w for w in wallets.values() if w.debits or w.package_tokens or w.touched_lots]
    recognized: dict[str, int] = defaultdict(int)
    deferred_after: dict[int, int] = {}
    for w in touched:
        for lot in w.lots:
            if lot.kind == PACKAGE and lot.id in w.touched_lots:
                new_deferred = lot.price * lot.remaining // lot.granted if lot.granted else 0
                recognized[w.account.id] += lot.deferred - new_deferred
                deferred_after[lot.id] = new_deferred
    entry_index: dict[str, int] = {}
    for w in sorted(touched, key=lambda w: w.account.id):
        cust = ledgers[w.account.id] = customer_ledger(session, w.account)
        key = (book_of(w.account), w.unit.code)
        if key not in houses:
            houses[key] = house_ledger(session, key[0], w.unit)
        house = houses[key]
        legs: list[Leg] = []
        revenue = 0
        for kind, acct in (
            (BONUS, cust.bonus),
            (PAID, cust.prepaid),
            (OVERAGE, cust.receivable_unbilled),
        ):
            atoms = w.debits.get(kind, 0)
            if atoms:
                legs.append(Leg(acct.id, Amount(atoms, w.unit)))
                revenue += atoms
        if revenue:
            legs.append(Leg(house.revenue_usage.id, Amount(-revenue, w.unit)))
        if w.package_tokens:
            t = Amount(w.package_tokens, TOKENS)
            legs += [Leg(cust.package_tokens.id, t), Leg(house.tokens_consumed.id, -t)]
        rec = recognized.get(w.account.id, 0)
        if rec:
            m = Amount(rec, w.unit)
            legs += [Leg(cust.deferred_packages.id, m), Leg(house.revenue_packages.id, -m)]
        if not legs:
            continue
        entry_index[w.account.id] = len(specs)
        specs.append(
            EntrySpec(
                legs=tuple(legs),
                description=f"usage batch ({w.account.id})",
                effective_at=received,
                metadata={"account_id": w.account.id, "kind": "usage"},
            )
        )
    held = [p.captured_hold for _, p in charged if p.captured_hold is not None]
    voids = void_specs(session, held, description="authorization captured")
    entries = post_entries(session, specs + voids) if specs or voids else []
    entry_of = {acc: entries[idx].id for acc, idx in entry_index.items()}
    # lots in one statement; their ORM copies are marked clean so the flush leaves them alone
    lots = [lot for w in touched for lot in w.lots if lot.id in w.touched_lots]
    if lots:
        for lot in lots:
            if lot.id in deferred_after:
                lot.deferred = deferred_after[lot.id]
        session.execute(
            _UPDATE_LOTS,
            {
                "ids": [lot.id for lot in lots],
                "remaining": [Decimal(lot.remaining) for lot in lots],
                "deferred": [Decimal(lot.deferred) for lot in lots],
            },
        )
        for lot in lots:
            set_committed_value(lot, "remaining", lot.remaining)
            set_committed_value(lot, "deferred", lot.deferred)
    _low_balance_events(session, touched)
    rows = []
    for _, p in charged:
        r, tk, d = p.record, p.record.tokens, p.draw
        assert d is not None
        rows.append(
            {
                "id": r.id,
                "occurred_at": r.occurred_at,
                "received_at": received,
                "account_id": r.account_id,
                "currency": p.wallet.unit.code,
                "model": r.model,
                "input_tokens": tk.input_tokens,
                "output_tokens": tk.output_tokens,
                "cache_read_tokens": tk.cache_read_tokens,
                "cache_write_5m_tokens": tk.cache_write_5m_tokens,
                "cache_write_1h_tokens": tk.cache_write_1h_tokens,
                "reasoning_tokens": tk.reasoning_tokens,
                "batch": r.batch,
                "http_status": r.http_status,
                "finish_reason": r.finish_reason,
                "failure_kind": p.billing.failure,
                "policy_id": p.policy.id,
                "policy_version": p.policy.version,
                "price_source": p.price_source,
                "rate_card_id": p.card_id,
                "rated": p.billing.rated,
                "billed": d.charged,
                "credited": p.billing.credited,
                "reason": p.billing.reason,
                "drawn": d.summary(),
                "wholesale_billed": p.reseller_draw.charged if p.reseller_draw else None,
                "wholesale_drawn": p.reseller_draw.summary() if p.reseller_draw else None,
                "wholesale_credited": p.wholesale.credited if p.wholesale else None,
                "authorization_id": r.authorization_id,
                "entry_id": entry_of.get(r.account_id),
                "tags": dict(r.tags),
            }
        )
    _copy_records(session, rows)
    session.flush()


_JSON_COLUMNS = frozenset({"drawn", "tags", "wholesale_drawn"})


def _copy_records(session: Session, rows: list[dict[str, Any]]) -> None:
    """Write usage records with one ``COPY`` (several times faster than a multi-row INSERT)."""
    columns = list(rows[0])
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    statement = f"COPY wallet_usage_records ({', '.join(columns)}) FROM STDIN"
    with cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(
                [
                    Jsonb(row[c]) if c in _JSON_COLUMNS and row[c] is not None else row[c]
                    for c in columns
                ]
            )


def parse_tokens(
    *,
    fields: Mapping[str, Any] | None,
    openai_usage: Mapping[str, Any] | None,
    anthropic_usage: Mapping[str, Any] | None,
) -> Tokens:
    """Tokens from canonical fields or a provider usage object (exactly one source).

    Raises:
        InvalidUsage: none or several sources, or bad counts.
    """
    from wallet.normalize import from_anthropic, from_openai

    sources = [s for s in (openai_usage, anthropic_usage) if s is not None]
    if len(sources) > 1:
        raise InvalidUsage("send either openai_usage or anthropic_usage, not both")
    if openai_usage is not None:
        return from_openai(openai_usage)
    if anthropic_usage is not None:
        return from_anthropic(anthropic_usage)
    f = dict(fields or {})
    t = Tokens(
        **{
            k: int(f.get(k) or 0)
            for k in (
                "input_tokens",
                "output_tokens",
                "cache_read_tokens",
                "cache_write_5m_tokens",
                "cache_write_1h_tokens",
                "reasoning_tokens",
            )
        }
    )
    if (
        min(
            t.input_tokens,
            t.output_tokens,
            t.cache_read_tokens,
            t.cache_write_5m_tokens,
            t.cache_write_1h_tokens,
            t.reasoning_tokens,
        )
        < 0
    ):
        raise InvalidUsage("token counts must not be negative")
    if t.reasoning_tokens > t.output_tokens:
        raise InvalidUsage("reasoning_tokens are part of output_tokens and cannot exceed them")
    return t
