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

Lock order: credit lots (by id, one statement), quota windows, then ledger accounts (by id).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT, NUMERIC, TEXT
from sqlalchemy.orm import Session

from ledger.amounts import Amount
from ledger.errors import DomainError
from ledger.journal import EntrySpec, Leg, post_entries, void_hold
from ledger.units import TOKENS, Unit
from ledger.units import unit as unit_of
from plans.catalog import FailedRequestPolicy, PlanSpec, get_failed_request_policy, get_plan
from plans.errors import InvalidUsage
from plans.prices import ModelPrice
from plans.pricing import advance_priced_through, resolve_account_price
from wallet.accounts import EVERYTHING, Scope
from wallet.burn import BONUS, NEVER, OVERAGE, PACKAGE, PAID, PLAN, validate_burn_order
from wallet.chart import (
    CustomerLedger,
    HouseLedger,
    book_of,
    currency_of,
    customer_ledger,
    house_ledger,
)
from wallet.gate import enter_shared
from wallet.models import Account, Authorization, CreditLot, QuotaWindow, Subscription, UsageRecord
from wallet.normalize import Tokens, failure_kind
from wallet.quota import window_bounds

MAX_BATCH = 1000
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


# -- batch state ---------------------------------------------------------------------------


class Refusal(DomainError):
    """A record that cannot be paid; the batch goes on without it."""

    code = "insufficient_funds"


@dataclass
class _Wallet:
    """One account's spendable state for the batch, changed record by record."""

    account: Account
    unit: Unit
    order: tuple[str, ...]
    lots: list[CreditLot]
    overage_used: int
    plan: PlanSpec | None = None
    windows: list[QuotaWindow] = field(default_factory=list)
    debits: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    package_tokens: int = 0
    touched_lots: set[int] = field(default_factory=set)
    touched_windows: bool = False


@dataclass
class _Draw:
    """A tentative draw from one wallet for one record (applied only if the record is paid)."""

    lots: list[tuple[CreditLot, int]] = field(default_factory=list)
    money: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    package_tokens: int = 0
    plan_requests: int = 0
    plan_tokens: int = 0

    @property
    def charged(self) -> int:
        """Money taken from the wallet (bonus, paid, overage); plan and packages cover the rest."""
        return sum(self.money.values())

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: str(v) for k, v in self.money.items() if v}
        if self.package_tokens:
            out["package_tokens"] = self.package_tokens
        if self.plan_requests:
            out["plan_requests"] = self.plan_requests
        return out


def _quota_room(w: _Wallet, requests: int, tokens: int, at: datetime) -> bool:
    for win in w.windows:
        need = requests if win.unit == "requests" else tokens
        used = win.used if win.window_end is not None and at < win.window_end else 0
        if used + need > win.limit:
            return False
    return True


def _take_quota(w: _Wallet, requests: int, tokens: int, at: datetime) -> None:
    for win in w.windows:
        need = requests if win.unit == "requests" else tokens
        if win.window_end is None or at >= win.window_end:
            win.window_start, win.window_end = window_bounds(win.kind, at)
            win.used = 0
        win.used += need
    w.touched_windows = True


def _lot_order(lot: CreditLot) -> tuple[int, datetime, int]:
    return (-lot.priority, lot.expires_at or NEVER, lot.id)


def _plan_draw(
    w: _Wallet,
    model: str,
    money: int,
    tokens: int,
    at: datetime,
    limits: Mapping[int, int] | None = None,
) -> tuple[_Draw | None, int, int, str | None]:
    """Return (draw, money left, tokens left, refusal) for a burn order; None draw = unpaid.

    With ``limits`` only those lots are used, each up to its limit (a hold's reservation).
    """

    def room(lot: CreditLot) -> int:
        if limits is None:
            return lot.remaining
        return min(lot.remaining, limits.get(lot.id, 0))

    draw = _Draw()
    money_left, tokens_left = money, tokens
    for source in w.order:
        if money_left == 0 and tokens_left == 0:
            break
        if source == PLAN:
            if w.plan is None or (w.plan.models and model not in w.plan.models):
                continue
            if _quota_room(w, 1, tokens_left, at):
                draw.plan_requests, draw.plan_tokens = 1, tokens_left
                money_left = tokens_left = 0
            elif w.plan.on_exhausted == "block":
                return None, money_left, tokens_left, "plan_quota_exhausted"
        elif source == PACKAGE:
            lots = sorted(
                (
                    lot
                    for lot in w.lots
                    if lot.kind == PACKAGE
                    and room(lot) > 0
                    and (not lot.models or model in lot.models)
                    and (lot.expires_at is None or lot.expires_at > at)
                ),
                key=_lot_order,
            )
            for lot in lots:
                if tokens_left == 0:
                    break
                take = min(tokens_left, room(lot))
                draw.lots.append((lot, take))
                draw.package_tokens += take
                money_left -= money_left * take // tokens_left if take < tokens_left else money_left
                tokens_left -= take
        elif source in (BONUS, PAID):
            lots = sorted(
                (
                    lot
                    for lot in w.lots
                    if lot.kind == source
                    and room(lot) > 0
                    and (lot.expires_at is None or lot.expires_at > at)
                ),
                key=_lot_order,
            )
            for lot in lots:
                if money_left == 0:
                    break
                take = min(money_left, room(lot))
                draw.lots.append((lot, take))
                draw.money[source] += take
                money_left -= take
            if money_left == 0:
                tokens_left = 0
        elif source == OVERAGE:
            headroom = w.account.credit_limit - w.overage_used
            if money_left and money_left <= headroom:
                draw.money[OVERAGE] += money_left
                money_left = tokens_left = 0
    if money_left > 0:
        return None, money_left, tokens_left, "insufficient_funds"
    return draw, 0, 0, None


def _apply(w: _Wallet, draw: _Draw, at: datetime) -> None:
    for lot, take in draw.lots:
        lot.remaining -= take
        w.touched_lots.add(lot.id)
    for kind, atoms in draw.money.items():
        w.debits[kind] += atoms
        if kind == OVERAGE:
            w.overage_used += atoms
    w.package_tokens += draw.package_tokens
    if draw.plan_requests:
        _take_quota(w, draw.plan_requests, draw.plan_tokens, at)


# -- the batch -----------------------------------------------------------------------------


_CLAIM = text(
    "INSERT INTO wallet_usage_claims (id, account_id)"
    " SELECT * FROM unnest(:ids, :accounts) ON CONFLICT DO NOTHING RETURNING id"
).bindparams(bindparam("ids", type_=ARRAY(TEXT)), bindparam("accounts", type_=ARRAY(TEXT)))

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


def _load_wallets(
    session: Session, accounts: Iterable[Account], at: datetime, extra_lots: Sequence[int] = ()
) -> dict[str, _Wallet]:
    """Lock and load the lots, plan windows and overage of the accounts (lots in id order)."""
    accs = {a.id: a for a in accounts}
    if not accs:
        return {}
    lots = session.scalars(
        select(CreditLot)
        .where(
            CreditLot.account_id.in_(list(accs)),
            (CreditLot.remaining > 0) | CreditLot.id.in_(list(extra_lots)),
        )
        .order_by(CreditLot.id)
        .with_for_update()
    ).all()
    by_account: dict[str, list[CreditLot]] = defaultdict(list)
    for lot in lots:
        by_account[lot.account_id].append(lot)
    subs = session.scalars(
        select(Subscription).where(
            Subscription.account_id.in_(list(accs)), Subscription.status == "active"
        )
    ).all()
    windows = (
        session.scalars(
            select(QuotaWindow)
            .where(QuotaWindow.subscription_id.in_([s.id for s in subs]))
            .order_by(QuotaWindow.id)
            .with_for_update()
        ).all()
        if subs
        else []
    )
    overage: dict[str, int] = {
        owner: int(atoms)
        for owner, atoms in session.execute(
            text(
                "SELECT owner_id, sum(debits_posted - credits_posted) FROM ledger_accounts"
                " WHERE code IN ('receivable:unbilled', 'receivable:invoiced')"
                " AND owner_id = ANY(:owners) GROUP BY owner_id"
            ).bindparams(bindparam("owners", type_=ARRAY(TEXT))),
            {"owners": list(accs)},
        )
    }
    out: dict[str, _Wallet] = {}
    for a in accs.values():
        out[a.id] = _Wallet(
            account=a,
            unit=currency_of(a),
            order=validate_burn_order(a.burn_order),
            lots=by_account.get(a.id, []),
            overage_used=int(overage.get(a.id, 0)),
        )
    for s in subs:
        w = out[s.account_id]
        w.plan = get_plan(session, s.plan_id)
        w.windows = [win for win in windows if win.subscription_id == s.id]
    return out


def _advance_watermarks(session: Session, latest: Mapping[str, datetime]) -> None:
    for code, at in sorted(latest.items()):
        step = WATERMARK_STEP_SECONDS
        bucket = datetime.fromtimestamp((int(at.timestamp()) // step + 1) * step, tz=at.tzinfo)
        advance_priced_through(session, code, bucket)


@dataclass
class _Priced:
    record: UsageIn
    wallet: _Wallet
    billing: Billing
    price_source: str
    card_id: str | None
    policy: FailedRequestPolicy
    wholesale: Billing | None = None
    draw: _Draw | None = None
    reseller_draw: _Draw | None = None


def charge_batch(
    session: Session,
    records: Sequence[UsageIn | Rejected],
    *,
    now: datetime | None = None,
    scope: Scope = EVERYTHING,
) -> list[UsageResult]:
    """Charge a batch of usage records; see the module docstring. The caller commits.

    Returns:
        One result per input record, in the same order.
    """
    results: dict[int, UsageResult] = {}
    valid: list[tuple[int, UsageIn]] = []
    seen: dict[str, int] = {}
    for i, r in enumerate(records):
        if isinstance(r, Rejected):
            results[i] = UsageResult(r.id, "rejected", reason=r.reason, detail=r.detail)
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


def _charge_valid(
    session: Session,
    valid: list[tuple[int, UsageIn]],
    results: dict[int, UsageResult],
    now: datetime | None,
    scope: Scope,
) -> None:
    claimed = set(
        session.execute(
            _CLAIM, {"ids": [r.id for _, r in valid], "accounts": [r.account_id for _, r in valid]}
        ).scalars()
    )
    dups = [r.id for _, r in valid if r.id not in claimed]
    previous = _previous_results(session, dups)
    todo: list[tuple[int, UsageIn]] = []
    for i, r in valid:
        if r.id in claimed:
            todo.append((i, r))
            continue
        prev = previous.get(r.id)
        if prev is None:  # claimed by a batch that is still being written: retry later
            results[i] = UsageResult(
                r.id,
                "rejected",
                reason="in_progress",
                detail="this record id is being charged by another request",
            )
            continue
        unit = unit_of(prev.currency)
        results[i] = UsageResult(
            r.id, "duplicate", Amount(prev.billed, unit), Amount(prev.credited, unit), prev.reason
        )
    if not todo:
        return
    account_ids = sorted({r.account_id for _, r in todo})
    accounts = {
        a.id: a
        for a in session.scalars(select(Account).where(Account.id.in_(account_ids)))
        if scope.allows(a)  # an account outside the caller's scope looks unknown
    }
    parent_ids = sorted({a.parent_id for a in accounts.values() if a.parent_id} - set(accounts))
    parents = {a.id: a for a in session.scalars(select(Account).where(Account.id.in_(parent_ids)))}
    all_accounts = {**accounts, **parents}
    # The usage gate (wallet/gate.py): received_at is read under a shared lock per billing tree,
    # so the month-end close has an exact cut-off without touching the records.
    gate_at = enter_shared(session, {a.parent_id or a.id for a in accounts.values()})
    received = now or gate_at
    unclaim: list[str] = []
    latest: dict[str, datetime] = {}
    for _, r in todo:
        a = accounts.get(r.account_id)
        if a is not None and (a.currency not in latest or r.occurred_at > latest[a.currency]):
            latest[a.currency] = r.occurred_at
    _advance_watermarks(session, latest)
    holds = _lock_authorizations(session, todo, received)
    reserved_lots = [lot_id for a in holds.values() for lot_id, _ in a.reserved]
    wallets = _load_wallets(session, all_accounts.values(), received, reserved_lots)
    policies: dict[str | None, FailedRequestPolicy] = {}
    priced: list[tuple[int, _Priced]] = []
    for i, r in todo:
        w = wallets.get(r.account_id)
        if w is None:
            results[i] = UsageResult(
                r.id,
                "rejected",
                reason="unknown_account",
                detail=f"account {r.account_id} does not exist",
            )
            unclaim.append(r.id)
            continue
        try:
            resolved = resolve_account_price(
                session,
                model=r.model,
                at=r.occurred_at,
                currency=w.unit,
                account_id=w.account.id,
                reseller_account_id=w.account.parent_id,
            )
        except DomainError as exc:
            results[i] = UsageResult(r.id, "rejected", reason=exc.code, detail=exc.detail)
            unclaim.append(r.id)
            continue
        pid = w.account.failed_request_policy_id
        if pid not in policies:
            policies[pid] = get_failed_request_policy(session, pid)
        policy = policies[pid]
        rated, out_atoms = rate_atoms(r.tokens, resolved.price, batch=r.batch)
        billing = apply_policy(r, rated, out_atoms, policy)
        p = _Priced(r, w, billing, resolved.source.value, resolved.card_id, policy)
        if w.account.parent_id and resolved.wholesale is not None:
            wr, wout = rate_atoms(r.tokens, resolved.wholesale.price, batch=r.batch)
            p.wholesale = apply_policy(r, wr, wout, policy)
        priced.append((i, p))
    # burn down, record by record, in request order
    charged: list[tuple[int, _Priced]] = []
    for i, p in priced:
        r, w = p.record, p.wallet
        hold = holds.get(r.authorization_id or "")
        refusal: str | None = None
        draw: _Draw | None
        if hold is not None and hold.account_id == r.account_id:
            draw, p.billing = _capture(w, hold, p.billing, r)
        else:
            hold = None
            draw, _, _, refusal = _plan_draw(
                w, r.model, p.billing.billed, p.billing.billable_tokens, r.occurred_at
            )
        if draw is None:
            results[i] = UsageResult(
                r.id,
                "rejected",
                reason=refusal,
                detail=_refusal_detail(refusal, w, p.billing.billed),
            )
            unclaim.append(r.id)
            continue
        if p.wholesale is not None and p.wholesale.billed:
            rw = wallets[w.account.parent_id or ""]
            rdraw, _, _, _ = _plan_draw(
                _money_only(rw),
                r.model,
                p.wholesale.billed,
                p.wholesale.billable_tokens,
                r.occurred_at,
            )
            if rdraw is None:
                if hold is not None:  # give the reservation back: the hold stays open
                    _unrestore(w, hold)
                results[i] = UsageResult(
                    r.id,
                    "rejected",
                    reason="reseller_float_exhausted",
                    detail="the reseller's float cannot cover this usage at wholesale",
                )
                unclaim.append(r.id)
                continue
            _apply(rw, rdraw, r.occurred_at)
            p.reseller_draw = rdraw
        if hold is not None:
            _settle_hold(session, w, hold, r.id, received)
        _apply(w, draw, r.occurred_at)
        p.draw = draw
        charged.append((i, p))
        results[i] = UsageResult(
            r.id,
            "charged",
            Amount(draw.charged, w.unit),
            Amount(p.billing.credited, w.unit),
            p.billing.reason,
        )
    if unclaim:
        session.execute(
            text("DELETE FROM wallet_usage_claims WHERE id = ANY(:ids)").bindparams(
                bindparam("ids", type_=ARRAY(TEXT))
            ),
            {"ids": unclaim},
        )
    if charged:
        _write(session, charged, wallets, received)


def _lock_authorizations(
    session: Session, todo: Sequence[tuple[int, UsageIn]], at: datetime
) -> dict[str, Authorization]:
    """Lock the approved, unexpired holds the records name (before any lot: lock order)."""
    ids = sorted({r.authorization_id for _, r in todo if r.authorization_id})
    if not ids:
        return {}
    rows = session.scalars(
        select(Authorization)
        .where(Authorization.id.in_(ids))
        .order_by(Authorization.id)
        .with_for_update()
    ).all()
    return {a.id: a for a in rows if a.status == "approved" and a.expires_at > at}


def _capture(
    w: _Wallet, hold: Authorization, billing: Billing, r: UsageIn
) -> tuple[_Draw, Billing]:
    """Draw a record from its hold's reservation; beyond the hold only the credit limit may pay,
    otherwise the charge is capped at what was held (the rest is credited, ``capped_at_hold``)."""
    by_id = {lot.id: lot for lot in w.lots}
    limits: dict[int, int] = defaultdict(int)
    for lot_id, atoms in hold.reserved:
        by_id[lot_id].remaining += atoms
        limits[lot_id] += atoms
    view = _Wallet(
        account=w.account,
        unit=w.unit,
        order=w.order,
        lots=[by_id[lot_id] for lot_id in limits],
        overage_used=w.overage_used,
        plan=w.plan if hold.plan_covered else None,
        windows=w.windows,
    )
    draw, money_left, _, _ = _plan_draw(
        view, r.model, billing.billed, billing.billable_tokens, r.occurred_at, limits
    )
    if draw is None:
        capped = billing.billed - money_left
        billing = Billing(
            billing.rated,
            capped,
            billing.credited + money_left,
            billing.billable_tokens,
            billing.failure,
            "capped_at_hold",
        )
        draw, _, _, _ = _plan_draw(
            view, r.model, capped, billing.billable_tokens, r.occurred_at, limits
        )
        assert draw is not None
    return draw, billing


def _unrestore(w: _Wallet, hold: Authorization) -> None:
    by_id = {lot.id: lot for lot in w.lots}
    for lot_id, atoms in hold.reserved:
        by_id[lot_id].remaining -= atoms


def _settle_hold(
    session: Session, w: _Wallet, hold: Authorization, record_id: str, at: datetime
) -> None:
    """The hold is captured: void its ledger reservation (the charge posts with the batch)."""
    if hold.hold_entry_id is not None:
        void_hold(
            session, hold.hold_entry_id, description=f"authorization {hold.id} captured", now=at
        )
    hold.status, hold.usage_record_id, hold.resolved_at = "captured", record_id, at
    for lot_id, _ in hold.reserved:
        w.touched_lots.add(lot_id)


def _money_only(w: _Wallet) -> _Wallet:
    """The reseller's float pays wholesale from money (bonus, paid, overage) only."""
    w.order = tuple(s for s in w.order if s in (BONUS, PAID, OVERAGE))
    w.plan = None
    return w


def _refusal_detail(refusal: str | None, w: _Wallet, billed: int) -> str:
    if refusal == "plan_quota_exhausted":
        return "the plan's quota is used up and the plan blocks further requests until it resets"
    return (
        f"account {w.account.id} cannot cover {Amount(billed, w.unit)}"
        f" (prepaid credit and credit limit exhausted)"
    )


def _write(
    session: Session,
    charged: list[tuple[int, _Priced]],
    wallets: dict[str, _Wallet],
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
            houses[key] = house_ledger(session, *key[:1], w.unit)
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
    entries = post_entries(session, specs) if specs else []
    entry_of = {acc: entries[idx].id for acc, idx in entry_index.items()}
    # lots and quota windows
    lots = [lot for w in touched for lot in w.lots if lot.id in w.touched_lots]
    if lots:
        session.execute(
            _UPDATE_LOTS,
            {
                "ids": [lot.id for lot in lots],
                "remaining": [Decimal(lot.remaining) for lot in lots],
                "deferred": [Decimal(deferred_after.get(lot.id, lot.deferred)) for lot in lots],
            },
        )
        for lot in lots:
            if lot.id in deferred_after:
                lot.deferred = deferred_after[lot.id]
    # records
    rows = []
    for _, p in charged:
        r, tk = p.record, p.record.tokens
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
                "billed": p.draw.charged if p.draw else 0,
                "credited": p.billing.credited,
                "reason": p.billing.reason,
                "drawn": p.draw.summary() if p.draw else {},
                "wholesale_billed": p.reseller_draw.charged if p.reseller_draw else None,
                "wholesale_drawn": p.reseller_draw.summary() if p.reseller_draw else None,
                "wholesale_credited": p.wholesale.credited if p.wholesale else None,
                "authorization_id": r.authorization_id,
                "entry_id": entry_of.get(r.account_id),
                "tags": dict(r.tags),
            }
        )
    session.execute(insert(UsageRecord), rows)
    session.flush()


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
