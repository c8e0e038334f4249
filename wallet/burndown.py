"""Burn-down against locked wallet state: what pays for one request, in the account's order.

Shared by the usage path (``wallet/charging.py``) and gateway holds
(``wallet/authorizations.py``). A :class:`WalletState` is one account's spendable state for the
length of a transaction: its credit lots, plan quota windows and overage headroom, loaded under
the account's row lock. :func:`draw` decides how one request is paid without changing anything;
:func:`apply_draw` then takes it out of the state, which the caller writes back.

Lock order (every path that changes a wallet): the ``wallet_accounts`` rows of every account
involved, sorted by id (:func:`wallet.accounts.lock_accounts`); then authorizations; then ledger
accounts by id (``ledger.journal``). Credit lots and quota windows are changed only by holders
of their account's row, so they need no row locks of their own: two writers of one wallet
serialize on the account row and never see each other's half-done work.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY, TEXT
from sqlalchemy.orm import Session

from ledger.base import in_array
from ledger.errors import HoldNotPending
from ledger.journal import void_hold
from ledger.units import Unit
from plans.catalog import PlanSpec, get_plan
from wallet.burn import BONUS, NEVER, OVERAGE, PACKAGE, PAID, PLAN, validate_burn_order
from wallet.chart import currency_of
from wallet.models import Account, Authorization, CreditLot, QuotaWindow, Subscription
from wallet.quota import window_bounds

#: The sources a reseller's float pays wholesale from: money only, never its own plan/packages.
MONEY_SOURCES = frozenset({BONUS, PAID, OVERAGE})


@dataclass
class WalletState:
    """One account's spendable state for a transaction, changed request by request.

    Attributes:
        overage_used: atoms of credit limit in use: unbilled overage posted, overage reserved
            by open holds, invoices not paid yet and debts left by refunds and disputes
            (:data:`CREDIT_IN_USE_CODES`).
        money_before: bonus plus paid credit in the lots when loaded (for ``balance.low``).
    """

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
    money_before: int = 0

    @property
    def headroom(self) -> int:
        """Overage that may still be drawn within the credit limit."""
        return self.account.credit_limit - self.overage_used

    def money_left(self) -> int:
        """Bonus plus paid credit left in the lots now."""
        return sum(lot.remaining for lot in self.lots if lot.kind in (BONUS, PAID))


@dataclass
class Draw:
    """How one request is paid (decided by :func:`draw`, taken by :func:`apply_draw`)."""

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
        """What paid, as stored on the usage record (atoms as decimal strings)."""
        out: dict[str, Any] = {k: str(v) for k, v in self.money.items() if v}
        if self.package_tokens:
            out["package_tokens"] = self.package_tokens
        if self.plan_requests:
            out["plan_requests"] = self.plan_requests
            out["plan_tokens"] = self.plan_tokens
        return out


def _window_used(win: QuotaWindow, at: datetime) -> int:
    return win.used if win.window_end is not None and at < win.window_end else 0


def quota_room(w: WalletState, requests: int, tokens: int, at: datetime) -> bool:
    """True when every plan window has room for the request."""
    for win in w.windows:
        need = requests if win.unit == "requests" else tokens
        if _window_used(win, at) + need > win.limit:
            return False
    return True


def take_quota(
    w: WalletState, requests: int, tokens: int, at: datetime
) -> list[tuple[QuotaWindow, int]]:
    """Count a request in every window (opening a new window where the last one closed);
    returns what each window took."""
    taken = []
    for win in w.windows:
        need = requests if win.unit == "requests" else tokens
        if win.window_end is None or at >= win.window_end:
            win.window_start, win.window_end = window_bounds(win.kind, at)
            win.used = 0
        win.used += need
        taken.append((win, need))
    return taken


def _lot_order(lot: CreditLot) -> tuple[int, datetime, int]:
    return (-lot.priority, lot.expires_at or NEVER, lot.id)


def draw(
    w: WalletState,
    model: str,
    money: int,
    tokens: int,
    at: datetime,
    *,
    sources: Iterable[str] | None = None,
    room: Callable[[CreditLot], int] | None = None,
    use_plan: bool = True,
    partial: bool = False,
    valid_at: datetime | None = None,
) -> tuple[Draw | None, int, str | None]:
    """Decide how ``money`` atoms (``tokens`` billable tokens) are paid, in burn order.

    Plan quota covers the whole request or none of it; package tokens cover their share of the
    tokens and the same share of the money; bonus and paid lots cover money; overage covers
    money within the credit limit.

    Args:
        sources: the kinds that may pay (default: all, in the account's order).
        room: how much each lot may give (default: what it has left).
        use_plan: whether plan quota may pay.
        partial: take what can be paid and report the rest instead of refusing.
        valid_at: lots must not have expired by this instant (default ``at``).

    Returns:
        ``(draw, money left unpaid, refusal code)``. Unless ``partial``, a request that cannot
        be paid in full gets ``None`` and a refusal (``insufficient_funds`` or
        ``plan_quota_exhausted``); nothing is changed either way.
    """
    allowed = set(sources) if sources is not None else None
    cutoff = valid_at or at

    def lot_room(lot: CreditLot) -> int:
        return lot.remaining if room is None else min(lot.remaining, room(lot))

    def usable(lot: CreditLot, kind: str) -> bool:
        return (
            lot.kind == kind
            and lot_room(lot) > 0
            and (lot.expires_at is None or lot.expires_at > cutoff)
            and (kind != PACKAGE or not lot.models or model in lot.models)
        )

    d = Draw()
    money_left, tokens_left = money, tokens
    refusal: str | None = None
    for source in w.order:
        if money_left == 0 and tokens_left == 0:
            break
        if allowed is not None and source not in allowed:
            continue
        if source == PLAN:
            plan = w.plan
            if not use_plan or plan is None or (plan.models and model not in plan.models):
                continue
            if quota_room(w, 1, tokens_left, at):
                d.plan_requests, d.plan_tokens = 1, tokens_left
                money_left = tokens_left = 0
            elif plan.on_exhausted == "block":
                if not partial:
                    return None, money_left, "plan_quota_exhausted"
                refusal = "plan_quota_exhausted"
        elif source == PACKAGE:
            for lot in sorted((x for x in w.lots if usable(x, PACKAGE)), key=_lot_order):
                if tokens_left == 0:
                    break
                take = min(tokens_left, lot_room(lot))
                d.lots.append((lot, take))
                d.package_tokens += take
                money_left -= money_left * take // tokens_left
                tokens_left -= take
        elif source in (BONUS, PAID):
            for lot in sorted((x for x in w.lots if usable(x, source)), key=_lot_order):
                if money_left == 0:
                    break
                take = min(money_left, lot_room(lot))
                d.lots.append((lot, take))
                d.money[source] += take
                money_left -= take
            if money_left == 0:
                tokens_left = 0
        elif source == OVERAGE and money_left:
            take = min(money_left, max(w.headroom, 0)) if partial else money_left
            if take and take <= w.headroom:
                d.money[OVERAGE] += take
                money_left -= take
                if money_left == 0:
                    tokens_left = 0
    if money_left > 0 and not partial:
        return None, money_left, refusal or "insufficient_funds"
    return d, money_left, refusal if money_left else None


def apply_draw(w: WalletState, d: Draw, at: datetime) -> list[tuple[QuotaWindow, int]]:
    """Take a draw out of the wallet state; returns the quota each window took."""
    for lot, take in d.lots:
        lot.remaining -= take
        w.touched_lots.add(lot.id)
    for kind, atoms in d.money.items():
        w.debits[kind] += atoms
        if kind == OVERAGE:
            w.overage_used += atoms
    w.package_tokens += d.package_tokens
    if d.plan_requests:
        return take_quota(w, d.plan_requests, d.plan_tokens, at)
    return []


#: what uses the credit limit: overage not yet invoiced (with holds' reservations), invoices
#: not paid yet, and what refunds and disputes left the customer owing
CREDIT_IN_USE_CODES = ("receivable:unbilled", "receivable:invoiced", "receivable:reversals")

_OVERAGE_IN_USE = text(
    "SELECT owner_id, sum(debits_posted - credits_posted + debits_pending) FROM ledger_accounts"
    " WHERE code = ANY(:codes) AND owner_id = ANY(:owners)"
    " GROUP BY owner_id"
).bindparams(
    bindparam("owners", type_=ARRAY(TEXT)),
    bindparam("codes", type_=ARRAY(TEXT), value=list(CREDIT_IN_USE_CODES)),
)


def load_wallets(
    session: Session, accounts: Iterable[Account], extra_lots: Sequence[int] = ()
) -> dict[str, WalletState]:
    """Load the lots, plan windows and overage of accounts whose rows the caller has locked.
    ``extra_lots``: lots to load even when empty (a hold's reservation is about to be given
    back to them)."""
    accs = {a.id: a for a in accounts}
    if not accs:
        return {}
    # no row locks here: every writer of lots and quota windows holds the account rows
    lots = session.scalars(
        select(CreditLot)
        .where(
            in_array(CreditLot.account_id, accs),
            (CreditLot.remaining > 0) | in_array(CreditLot.id, extra_lots),
        )
        .order_by(CreditLot.id)
        .execution_options(populate_existing=True)
    ).all()
    by_account: dict[str, list[CreditLot]] = defaultdict(list)
    for lot in lots:
        by_account[lot.account_id].append(lot)
    subs = session.scalars(
        select(Subscription).where(
            in_array(Subscription.account_id, accs), Subscription.status == "active"
        )
    ).all()
    windows = (
        session.scalars(
            select(QuotaWindow)
            .where(QuotaWindow.subscription_id.in_([s.id for s in subs]))
            .order_by(QuotaWindow.id)
            .execution_options(populate_existing=True)
        ).all()
        if subs
        else []
    )
    overage = {
        owner: int(atoms)
        for owner, atoms in session.execute(_OVERAGE_IN_USE, {"owners": list(accs)})
    }
    out: dict[str, WalletState] = {}
    for a in accs.values():
        own = by_account.get(a.id, [])
        out[a.id] = WalletState(
            account=a,
            unit=currency_of(a),
            order=validate_burn_order(a.burn_order),
            lots=own,
            overage_used=overage.get(a.id, 0),
            money_before=sum(lot.remaining for lot in own if lot.kind in (BONUS, PAID)),
        )
    for s in subs:
        w = out[s.account_id]
        w.plan = get_plan(session, s.plan_id)
        w.windows = [win for win in windows if win.subscription_id == s.id]
    return out


# -- hold reservations ----------------------------------------------------------------------

#: The ledger hold outlives the authorization, so the wallet's expiry (which also returns the
#: lots) normally resolves it; the ledger's own expiry job is only a backstop.
LEDGER_GRACE = timedelta(hours=1)


def release_ledger_hold(session: Session, auth: Authorization, status: str, at: datetime) -> None:
    """Void the hold's pending ledger entry, unless the ledger's backstop expiry already
    released it (then there is nothing left to release)."""
    if auth.hold_entry_id is None:
        return
    with suppress(HoldNotPending):  # raised before anything is written
        void_hold(
            session,
            auth.hold_entry_id,
            description=f"authorization {auth.id} {status}",
            # resolve it even when the ledger's own expiry instant has passed unprocessed
            now=min(at, auth.expires_at + LEDGER_GRACE - timedelta(microseconds=1)),
        )


def reserve(
    auth: Authorization,
    retail: tuple[WalletState, Draw],
    wholesale: tuple[WalletState, Draw] | None,
    at: datetime,
) -> None:
    """Take a hold's draws out of the wallets and record on ``auth`` what it reserved, so that
    :func:`give_back` can return exactly that."""
    w, d = retail
    taken = apply_draw(w, d, at)
    reserved = [[lot.id, take] for lot, take in d.lots]
    auth.held_money = d.money.get(BONUS, 0) + d.money.get(PAID, 0) + d.money.get(OVERAGE, 0)
    auth.overage = d.money.get(OVERAGE, 0)
    auth.held_tokens = d.package_tokens
    auth.plan_covered = bool(d.plan_requests)
    auth.reserved_quota = [
        [win.id, need, win.window_end.isoformat() if win.window_end else None]
        for win, need in taken
    ]
    if wholesale is not None:
        rw, rd = wholesale
        apply_draw(rw, rd, at)
        reserved += [[lot.id, take] for lot, take in rd.lots]
        auth.reseller_overage = rd.money.get(OVERAGE, 0)
    auth.reserved = reserved


def give_back(
    auth: Authorization,
    wallets: Mapping[str, WalletState],
    *,
    lots_by_id: Mapping[int, CreditLot] | None = None,
) -> None:
    """Return a hold's reservation to its lots, quota windows and overage headroom (the caller
    holds the account rows and has loaded the reserved lots)."""
    lots = lots_by_id or {lot.id: lot for w in wallets.values() for lot in w.lots}
    owners = {lot.id: w for w in wallets.values() for lot in w.lots}
    for lot_id, atoms in auth.reserved:
        lots[lot_id].remaining += atoms
        owner = owners.get(lot_id)
        if owner is not None:
            owner.touched_lots.add(lot_id)
    w = wallets[auth.account_id]
    windows = {win.id: win for win in w.windows}
    for win_id, need, end in auth.reserved_quota:
        win = windows.get(win_id)
        if win is not None and win.window_end is not None and win.window_end.isoformat() == end:
            win.used = max(0, win.used - need)
    w.overage_used -= auth.overage
    parent = w.account.parent_id
    if parent and parent in wallets:
        wallets[parent].overage_used -= auth.reseller_overage
