"""Burn-down: what pays for one request, in the account's order (pure; no database).

One implementation, used by every path that spends from a wallet: usage records and gateway
authorizations (``wallet/gateway.py``) and purchases paid from the balance (``wallet/lots.py``).
A :class:`WalletState` is one account's spendable state for the length of a transaction: its
credit lots, plan quota windows and overage headroom, loaded under the account's row lock.
:func:`draw` decides how one request is paid without changing anything; :func:`apply_draw` then
takes it out of the state, which the caller writes back.

Reservations (gateway authorizations) move amounts from a lot's ``remaining`` to its
``reserved`` (and take plan quota and overage headroom); :func:`reserve` records exactly what
was taken in a :class:`Reservation`, and :func:`give_back` returns exactly that. Capturing is
"give the reservation back, charge the record as usage, reserve again what the grant still
holds" (:mod:`wallet.gateway`), so the burn order and the credit limit apply to captures exactly
as to plain usage.

The caller holds the account rows (the lock order is in :mod:`wallet.accounts`): lots and quota
windows change only under their account's row lock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.units import Unit
from wallet.burn_order import BONUS, NEVER, OVERAGE, PACKAGE, PAID, PLAN
from wallet.quota import window_bounds

#: The sources a reseller's float pays wholesale from: money only, never its own plan/packages.
MONEY_SOURCES = frozenset({BONUS, PAID, OVERAGE})
#: The sources a multi-capture money grant reserves from.
GRANT_MONEY_SOURCES = MONEY_SOURCES
#: The source a token grant reserves from.
GRANT_TOKEN_SOURCES = frozenset({PACKAGE})


@dataclass(slots=True, eq=False)
class Lot:
    """A credit lot's spendable state (``remaining``) and what open authorizations hold from it.

    ``reserved`` is what they hold; money lots count atoms of the currency, package lots tokens.
    """

    id: int
    account_id: str
    kind: str
    remaining: int
    reserved: int
    granted: int
    priority: int
    expires_at: datetime | None
    models: tuple[str, ...] = ()
    price: int = 0
    deferred: int = 0
    ledger_account_id: int = 0
    #: The first instant the lot may pay for (usage dated earlier cannot use it), or None.
    valid_from: datetime | None = None


@dataclass(slots=True, eq=False)
class Window:
    """The current window of one plan quota."""

    id: int
    subscription_id: str
    kind: str
    unit: str
    limit: int
    window_start: datetime | None
    window_end: datetime | None
    used: int


@dataclass(frozen=True, slots=True)
class PlanTerms:
    """What the burn-down needs of a coding plan.

    Its model scope and what happens when a window is exhausted (``block`` or fall back to the
    ``wallet``).
    """

    models: tuple[str, ...]
    on_exhausted: str


@dataclass(frozen=True, slots=True)
class Owner:
    """What the burn-down needs of the wallet's account."""

    id: str
    parent_id: str | None
    credit_limit: int


@dataclass
class WalletState:
    """One account's spendable state for a transaction, changed request by request.

    Attributes:
        overage_used: atoms of credit limit in use: unbilled overage posted, overage reserved
            by open authorizations, invoices not paid yet and debts left by refunds and
            disputes.
        money_before: bonus plus paid credit in the lots when loaded (for ``balance.low``).
    """

    account: Owner
    unit: Unit
    order: tuple[str, ...]
    lots: list[Lot]
    overage_used: int
    plan: PlanTerms | None = None
    #: When the subscription began and when its paid period ends: its quota covers usage dated
    #: inside that span only.
    plan_span: tuple[datetime | None, datetime | None] = (None, None)
    windows: list[Window] = field(default_factory=list)
    debits: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    package_tokens: int = 0
    touched_lots: set[int] = field(default_factory=set)
    touched_windows: set[int] = field(default_factory=set)
    money_before: int = 0
    _by_kind: dict[str, list[Lot]] = field(default_factory=dict, repr=False)

    def lots_of(self, kind: str) -> list[Lot]:
        """The lots of one kind in spending order.

        Higher priority, then earliest expiry (never-expiring last), then oldest (the order never
        changes within a transaction).
        """
        lots = self._by_kind.get(kind)
        if lots is None:
            lots = self._by_kind[kind] = sorted(
                (x for x in self.lots if x.kind == kind), key=_lot_order
            )
        return lots

    @property
    def headroom(self) -> int:
        """Overage that may still be drawn within the credit limit."""
        return self.account.credit_limit - self.overage_used

    def money_left(self) -> int:
        """Bonus plus paid credit left in the lots now (reservations excluded)."""
        return sum(lot.remaining for lot in self.lots if lot.kind in (BONUS, PAID))


@dataclass
class Draw:
    """How one request is paid (decided by :func:`draw`, taken by :func:`apply_draw`)."""

    lots: list[tuple[Lot, int]] = field(default_factory=list)
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


def plan_covers(w: WalletState, at: datetime) -> bool:
    """Whether the plan's quota may pay for usage dated ``at``.

    Inside the subscription's span and not before the start of a quota window that is still open
    (the counters of earlier windows are gone, so late usage from them is paid by the wallet).
    """
    start, end = w.plan_span
    if (start is not None and at < start) or (end is not None and at >= end):
        return False
    return all(win.window_start is None or at >= win.window_start for win in w.windows)


def _window_used(win: Window, at: datetime) -> int:
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
) -> list[tuple[Window, int]]:
    """Count a request in every window (opening a new window where the last one closed).

    Returns what each window took.
    """
    taken = []
    for win in w.windows:
        need = requests if win.unit == "requests" else tokens
        if win.window_end is None or at >= win.window_end:
            win.window_start, win.window_end = window_bounds(win.kind, at)
            win.used = 0
        win.used += need
        w.touched_windows.add(win.id)
        taken.append((win, need))
    return taken


def _lot_order(lot: Lot) -> tuple[int, datetime, int]:
    return (-lot.priority, lot.expires_at or NEVER, lot.id)


def draw(
    w: WalletState,
    model: str | None,
    money: int,
    tokens: int,
    at: datetime,
    *,
    sources: Iterable[str] | None = None,
    use_plan: bool = True,
    partial: bool = False,
    valid_at: datetime | None = None,
) -> tuple[Draw | None, int, str | None]:
    """Decide how ``money`` atoms (``tokens`` billable tokens) are paid, in burn order.

    Plan quota covers all of it or nothing, package tokens their share of the tokens and of the
    money, money lots and overage (within the credit limit) money; only lots' ``remaining``.

    Args:
        w: the account's wallet: its lots, plan quota and credit limit.
        model: the request's model (package and plan scopes); None matches only unscoped ones.
        money: the money to pay, in atoms of the account's currency.
        tokens: the billable tokens that package lots may pay.
        at: when the usage happened: lots must have started by then.
        sources: the kinds that may pay (default: all, in the account's order).
        use_plan: whether plan quota may pay.
        partial: take what can be paid and report the rest instead of refusing.
        valid_at: lots must not have expired by this instant (default ``at``).

    Returns:
        ``(draw, money left unpaid, refusal code)``. Unless ``partial``, a request that cannot
        be paid in full gets ``None`` and a refusal (``insufficient_funds`` or
        ``plan_quota_exhausted``); nothing is changed either way.
    """
    usable = _Usable(model, at, valid_at or at)
    d = Draw()
    money_left, tokens_left = money, tokens
    refusal: str | None = None
    for source in _sources(w.order, sources, use_plan):
        if money_left == 0 and tokens_left == 0:
            break
        if source == PLAN:
            covered = _draw_plan(w, d, model, tokens_left, at)
            if covered is False:
                if not partial:
                    return None, money_left, "plan_quota_exhausted"
                refusal = "plan_quota_exhausted"
            elif covered:
                money_left = tokens_left = 0
        elif source == PACKAGE:
            money_left, tokens_left = _draw_packages(w, d, money_left, tokens_left, usable)
        elif money_left or source != OVERAGE:  # bonus or paid lots, or overage while money is left
            money_left = _draw_cash(w, d, source, money_left, usable, partial)
            if money_left == 0:  # the money is paid: so are the tokens
                tokens_left = 0
    return _answer(d, money_left, refusal, partial)


def _answer(
    d: Draw, money_left: int, refusal: str | None, partial: bool
) -> tuple[Draw | None, int, str | None]:
    """What :func:`draw` returns once every source had its turn.

    Money left unpaid refuses the request (``insufficient_funds`` unless the plan refused)
    unless ``partial``; the refusal is reported only while money is left.
    """
    if money_left > 0 and not partial:
        return None, money_left, refusal or "insufficient_funds"
    return d, money_left, refusal if money_left else None


def _sources(order: tuple[str, ...], sources: Iterable[str] | None, use_plan: bool) -> list[str]:
    """The sources of the burn order that may pay, in order.

    Those of ``sources`` (all when None); plan quota only when ``use_plan``.
    """
    allowed = set(sources) if sources is not None else None
    return [s for s in order if (allowed is None or s in allowed) and (use_plan or s != PLAN)]


def _draw_cash(
    w: WalletState, d: Draw, source: str, money_left: int, usable: _Usable, partial: bool
) -> int:
    """Bonus or paid lots, or the credit limit (overage), pay what they can of the money left."""
    if source == OVERAGE:
        return _draw_overage(w, d, money_left, partial)
    return _draw_money(w, d, source, money_left, usable)


@dataclass(frozen=True, slots=True)
class _Usable:
    """Which lots may pay for a request.

    Unspent, not expired by ``cutoff``, valid from ``at`` and scoped to ``model`` (or unscoped).
    """

    model: str | None
    at: datetime
    cutoff: datetime

    def __call__(self, lot: Lot) -> bool:
        return (
            lot.remaining > 0
            and (lot.expires_at is None or lot.expires_at > self.cutoff)
            and (lot.valid_from is None or lot.valid_from <= self.at)
            and (not lot.models or self.model in lot.models)
        )


def _draw_plan(
    w: WalletState, d: Draw, model: str | None, tokens: int, at: datetime
) -> bool | None:
    """Plan quota pays the whole request, is exhausted and blocks, or does not apply.

    True. False. None: no plan, another model, usage outside its span, or it falls back to the
    wallet when exhausted.
    """
    plan = w.plan
    if plan is None or (plan.models and model not in plan.models) or not plan_covers(w, at):
        return None
    if quota_room(w, 1, tokens, at):
        d.plan_requests, d.plan_tokens = 1, tokens
        return True
    return False if plan.on_exhausted == "block" else None


def _draw_packages(
    w: WalletState, d: Draw, money_left: int, tokens_left: int, usable: _Usable
) -> tuple[int, int]:
    """Package tokens pay their share of the tokens and the same share of the money.

    Returns the money and tokens left.
    """
    for lot in w.lots_of(PACKAGE):
        if tokens_left == 0:
            break
        if not usable(lot):
            continue
        take = min(tokens_left, lot.remaining)
        d.lots.append((lot, take))
        d.package_tokens += take
        money_left -= money_left * take // tokens_left
        tokens_left -= take
    return money_left, tokens_left


def _draw_money(w: WalletState, d: Draw, kind: str, money_left: int, usable: _Usable) -> int:
    """Lots of one money kind pay what they can; returns the money left."""
    for lot in w.lots_of(kind):
        if money_left == 0:
            break
        if not usable(lot):
            continue
        take = min(money_left, lot.remaining)
        d.lots.append((lot, take))
        d.money[kind] += take
        money_left -= take
    return money_left


def _draw_overage(w: WalletState, d: Draw, money_left: int, partial: bool) -> int:
    """Overage pays within the credit limit (all or nothing unless ``partial``).

    Returns the money left.
    """
    take = min(money_left, max(w.headroom, 0)) if partial else money_left
    if take and take <= w.headroom:
        d.money[OVERAGE] += take
        money_left -= take
    return money_left


def _take(w: WalletState, d: Draw, at: datetime) -> list[tuple[Window, int]]:
    """Take a draw's lots, credit limit and quota out of the state (no debits recorded)."""
    for lot, take in d.lots:
        lot.remaining -= take
        w.touched_lots.add(lot.id)
    w.overage_used += d.money.get(OVERAGE, 0)
    if d.plan_requests:
        return take_quota(w, d.plan_requests, d.plan_tokens, at)
    return []


def apply_draw(w: WalletState, d: Draw, at: datetime) -> list[tuple[Window, int]]:
    """Spend a draw.

    Take it out of the wallet state and record the debits the batch posts; returns the quota each
    window took.
    """
    taken = _take(w, d, at)
    for kind, atoms in d.money.items():
        w.debits[kind] += atoms
    w.package_tokens += d.package_tokens
    return taken


# -- reservations ---------------------------------------------------------------------------


@dataclass
class Reservation:
    """What an authorization holds.

    Atoms (or tokens) per lot, plan quota per window (with the window's end, so quota is only given
    back to the window it came from), and credit limit of the account and of its reseller.
    """

    lots: dict[int, int] = field(default_factory=dict)
    quota: list[tuple[int, int, str | None]] = field(default_factory=list)
    overage: int = 0
    reseller_overage: int = 0

    @classmethod
    def from_stored(
        cls,
        lots: Iterable[Iterable[int]],
        quota: Iterable[Iterable[Any]],
        overage: int,
        reseller_overage: int,
    ) -> Reservation:
        """From the authorization row's columns."""
        out = cls(overage=overage, reseller_overage=reseller_overage)
        for lot_id, atoms in lots:
            out.lots[int(lot_id)] = out.lots.get(int(lot_id), 0) + int(atoms)
        out.quota = [(int(w), int(n), end) for w, n, end in quota]
        return out

    def stored_lots(self) -> list[list[int]]:
        """The ``reserved`` column: ``[[lot_id, atoms], ...]`` by lot id."""
        return [[lot_id, atoms] for lot_id, atoms in sorted(self.lots.items()) if atoms]

    def stored_quota(self) -> list[list[Any]]:
        """The ``reserved_quota`` column."""
        return [[w, n, end] for w, n, end in self.quota]

    def is_empty(self) -> bool:
        """True when nothing is held."""
        return (
            not any(self.lots.values())
            and not self.quota
            and not self.overage
            and not (self.reseller_overage)
        )


def reserve(
    w: WalletState, d: Draw, at: datetime, res: Reservation, *, reseller: bool = False
) -> None:
    """Take a draw out of the wallet into a reservation.

    Lot amounts move from ``remaining`` to ``reserved``; plan quota and credit limit are taken and
    recorded.
    """
    taken = _take(w, d, at)
    for lot, take in d.lots:
        lot.reserved += take
        res.lots[lot.id] = res.lots.get(lot.id, 0) + take
    overage = d.money.get(OVERAGE, 0)
    if reseller:
        res.reseller_overage += overage
    else:
        res.overage += overage
    res.quota += [
        (win.id, need, win.window_end.isoformat() if win.window_end else None)
        for win, need in taken
    ]


def give_back(
    res: Reservation,
    account_id: str,
    wallets: Mapping[str, WalletState],
    lots_by_id: Mapping[int, Lot],
) -> None:
    """Return a reservation to its lots, quota windows and overage headroom and empty it.

    The caller holds the account rows and has loaded the reserved lots.
    """
    for lot_id, atoms in res.lots.items():
        lot = lots_by_id[lot_id]
        lot.remaining += atoms
        lot.reserved -= atoms
        owner = wallets.get(lot.account_id)
        if owner is not None:
            owner.touched_lots.add(lot_id)
    w = wallets[account_id]
    windows = {win.id: win for win in w.windows}
    for win_id, need, end in res.quota:
        win = windows.get(win_id)
        if win is not None and win.window_end is not None and win.window_end.isoformat() == end:
            win.used = max(0, win.used - need)
            w.touched_windows.add(win.id)
    w.overage_used -= res.overage
    parent = w.account.parent_id
    if parent and parent in wallets:
        wallets[parent].overage_used -= res.reseller_overage
    res.lots, res.quota, res.overage, res.reseller_overage = {}, [], 0, 0
