"""Coding-plan subscriptions: start (fee from the wallet), quota windows, renewal, cancellation.

The plan fee moves to ``deferred:subscriptions`` when a period is paid and to
``revenue:subscriptions`` when that period ends (renewal or cancellation job).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.errors import InsufficientFunds, NotFound
from ledger.ids import new_id
from ledger.journal import Leg, post_entry
from plans.catalog import PlanSpec, get_plan
from wallet.accounts import EVERYTHING, Scope, get_account, lock_accounts
from wallet.errors import Conflict, InvalidRequest
from wallet.ledger_accounts import book_of, currency_of, customer_ledger, house_ledger
from wallet.lots import check_low_balance, draw_money, money_balance
from wallet.models import Account, QuotaWindow, Subscription, SubscriptionPeriod
from wallet.outbox import emit
from wallet.quota import add_months, window_bounds


def _charge_period(
    session: Session,
    account: Account,
    sub: Subscription,
    plan: PlanSpec,
    start: datetime,
    *,
    from_lot_id: int | None = None,
) -> SubscriptionPeriod:
    """Pay one period's fee from the wallet into deferred revenue (raises InsufficientFunds)."""
    end = add_months(start)
    cust = customer_ledger(session, account)
    before = money_balance(session, cust)
    entry_id = None
    if plan.monthly_fee.atoms:
        draw = draw_money(session, account, plan.monthly_fee, at=start, from_lot_id=from_lot_id)
        entry = post_entry(
            session,
            [*draw.legs, Leg(cust.deferred_subscriptions.id, -plan.monthly_fee)],
            description=f"plan {plan.id} fee for {start.date()}..{end.date()} ({sub.id})",
            idempotency_key=f"subscription-fee:{sub.id}:{start.isoformat()}",
            effective_at=start,
            metadata={"subscription_id": sub.id, "account_id": account.id},
        )
        entry_id = entry.id
    period = SubscriptionPeriod(
        subscription_id=sub.id,
        period_start=start,
        period_end=end,
        fee=plan.monthly_fee.atoms,
        entry_id=entry_id,
    )
    session.add(period)
    session.flush()
    check_low_balance(session, account, before)
    return period


def start_subscription(
    session: Session,
    account_id: str,
    plan_id: str,
    *,
    at: datetime | None = None,
    scope: Scope = EVERYTHING,
    from_lot_id: int | None = None,
) -> Subscription:
    """Subscribe an account to a plan, paying the first month from its wallet.

    Args:
        session: the caller's transaction.
        account_id: the subscribing account.
        plan_id: the plan subscribed to.
        at: when the subscription starts (default: now).
        scope: accounts outside it are unknown to the caller.
        from_lot_id: pay the first month from this one money lot (a card payment's paid lot).

    Raises:
        NotFound: unknown account or plan.
        Conflict: the account already has a live subscription.
        InsufficientFunds: the wallet cannot cover the fee (nothing changes).
    """
    account = get_account(session, account_id, scope=scope, lock=True)
    plan = get_plan(session, plan_id)
    if plan.currency.code != account.currency:
        raise InvalidRequest(
            f"plan {plan_id} is priced in {plan.currency.code}, the account in {account.currency}"
        )
    live = session.scalar(
        select(Subscription.id).where(
            Subscription.account_id == account.id, Subscription.status != "canceled"
        )
    )
    if live:
        raise Conflict(f"account {account.id} already has subscription {live}; cancel it first")
    when = at or utcnow()
    sub = Subscription(
        id=new_id("sub"),
        account_id=account.id,
        plan_id=plan.id,
        status="active",
        current_period_start=when,
        current_period_end=add_months(when),
        created_at=when,  # the plan covers usage dated from here on
    )
    session.add(sub)
    session.flush()
    _charge_period(session, account, sub, plan, when, from_lot_id=from_lot_id)
    for w in plan.windows:
        session.add(QuotaWindow(subscription_id=sub.id, kind=w.kind, unit=w.unit, limit=w.limit))
    session.flush()
    return sub


def get_live_subscription(session: Session, account_id: str) -> Subscription | None:
    """The account's active or past-due subscription, if any."""
    return session.scalars(
        select(Subscription).where(
            Subscription.account_id == account_id, Subscription.status != "canceled"
        )
    ).one_or_none()


def cancel_subscription(
    session: Session, subscription_id: str, *, scope: Scope = EVERYTHING, at: datetime | None = None
) -> Subscription:
    """Cancel at the end of the current period (past-due subscriptions end now)."""
    sub = session.scalars(
        select(Subscription).where(Subscription.id == subscription_id).with_for_update()
    ).one_or_none()
    if sub is None:
        raise NotFound(f"subscription {subscription_id} does not exist")
    get_account(session, sub.account_id, scope=scope)
    if sub.status == "past_due":
        sub.status, sub.canceled_at = "canceled", at or utcnow()
    elif sub.status == "active":
        sub.cancel_at_period_end = True
    session.flush()
    return sub


@dataclass(frozen=True, slots=True)
class WindowState:
    """One quota window as the balance endpoint shows it."""

    kind: str
    unit: str
    limit: int
    used: int
    resets_at: datetime | None


def _current(window: QuotaWindow, at: datetime) -> tuple[int, datetime | None]:
    if window.window_end is None or at >= window.window_end:
        if window.kind == "rolling_5h":
            return 0, None
        return 0, window_bounds(window.kind, at)[1]
    return window.used, window.window_end


def quota_state(
    session: Session, subscription_id: str, *, at: datetime | None = None
) -> list[WindowState]:
    """The windows of a subscription with exact ``used`` and ``resets_at`` at a moment."""
    when = at or utcnow()
    windows = session.scalars(
        select(QuotaWindow)
        .where(QuotaWindow.subscription_id == subscription_id)
        .order_by(QuotaWindow.id)
    ).all()
    out = []
    for w in windows:
        used, resets = _current(w, when)
        out.append(WindowState(w.kind, w.unit, w.limit, used, resets))
    return out


@dataclass(frozen=True, slots=True)
class QuotaDecision:
    """Whether the plan covered a request, and if not which window blocked it until when."""

    allowed: bool
    blocked_by: WindowState | None = None


def consume_quota(
    session: Session,
    subscription_id: str,
    *,
    tokens: int,
    requests: int = 1,
    at: datetime | None = None,
) -> QuotaDecision:
    """Count one request against every window of the plan, all or nothing.

    A request is covered only if every window has room for it; otherwise nothing is counted and
    the blocking window (the one that frees up last) is returned.
    """
    when = at or utcnow()
    windows = session.scalars(
        select(QuotaWindow)
        .where(QuotaWindow.subscription_id == subscription_id)
        .order_by(QuotaWindow.id)
        .with_for_update()
    ).all()
    blocked: list[WindowState] = []
    for w in windows:
        need = requests if w.unit == "requests" else tokens
        used, _ = _current(w, when)
        if used + need > w.limit:
            resets = w.window_end if used else window_bounds(w.kind, when)[1]
            blocked.append(WindowState(w.kind, w.unit, w.limit, used, resets))
    if blocked:
        return QuotaDecision(False, max(blocked, key=lambda b: b.resets_at or when))
    for w in windows:
        need = requests if w.unit == "requests" else tokens
        if w.window_end is None or when >= w.window_end:
            w.window_start, w.window_end = window_bounds(w.kind, when)
            w.used = 0
        w.used += need
    session.flush()
    return QuotaDecision(True)


def _recognize(session: Session, account: Account, period: SubscriptionPeriod) -> None:
    if period.recognized_entry_id is not None or not period.fee:
        return
    unit = currency_of(account)
    cust = customer_ledger(session, account)
    house = house_ledger(session, book_of(account), unit)
    fee = Amount(period.fee, unit)
    entry = post_entry(
        session,
        [Leg(cust.deferred_subscriptions.id, fee), Leg(house.revenue_subscriptions.id, -fee)],
        description=f"subscription {period.subscription_id} period"
        f" {period.period_start.date()} earned",
        idempotency_key=f"subscription-earned:{period.id}",
        effective_at=period.period_end,
    )
    period.recognized_entry_id = entry.id


@dataclass(frozen=True, slots=True)
class RenewalReport:
    """What one renewal run did."""

    renewed: list[str]
    failed: list[str]
    canceled: list[str]


def renew_due(session: Session, *, now: datetime | None = None, limit: int = 200) -> RenewalReport:
    """Renew every subscription whose period ended.

    Earn the ended period, then charge the next one (or end it if cancellation was asked).
    Idempotent: a period is paid at most once.

    A renewal the wallet cannot pay makes the subscription ``past_due`` (no plan quota while
    so) and is retried on every run; once paid, the new period starts at that moment.
    """
    at = now or utcnow()
    due = session.execute(
        select(Subscription.id, Subscription.account_id)
        .where(
            Subscription.status.in_(("active", "past_due")), Subscription.current_period_end <= at
        )
        .order_by(Subscription.current_period_end, Subscription.id)
        .limit(limit)
    ).all()
    if not due:
        return RenewalReport([], [], [])
    accounts = lock_accounts(session, {row.account_id for row in due}, with_parents=False)
    subs = session.scalars(
        select(Subscription)
        .where(
            Subscription.id.in_([row.id for row in due]),
            Subscription.status.in_(("active", "past_due")),
            Subscription.current_period_end <= at,
        )
        .order_by(Subscription.current_period_end, Subscription.id)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).all()
    report = RenewalReport([], [], [])
    for sub in subs:
        account = accounts[sub.account_id]
        _recognize_ended(session, account, sub)
        if sub.cancel_at_period_end:
            sub.status, sub.canceled_at = "canceled", at
            report.canceled.append(sub.id)
        elif _renew(session, account, sub, at):
            report.renewed.append(sub.id)
        else:
            report.failed.append(sub.id)
    session.flush()
    return report


def _recognize_ended(session: Session, account: Account, sub: Subscription) -> None:
    """Earn the period that ended, if it was paid."""
    ended = session.scalars(
        select(SubscriptionPeriod).where(
            SubscriptionPeriod.subscription_id == sub.id,
            SubscriptionPeriod.period_start == sub.current_period_start,
        )
    ).one_or_none()
    if ended is not None:
        _recognize(session, account, ended)


def _renew(session: Session, account: Account, sub: Subscription, at: datetime) -> bool:
    """Charge the next period and start it.

    False (the subscription ``past_due``, a failure event once per missed renewal) when the wallet
    cannot pay.
    """
    plan = get_plan(session, sub.plan_id)
    # an active plan renews back to back; a past-due one restarts when it is paid, so a
    # customer never pays for the months it had no service
    start = sub.current_period_end if sub.status == "active" else at
    try:
        with session.begin_nested():
            _charge_period(session, account, sub, plan, start)
    except InsufficientFunds as exc:
        sub.status = "past_due"
        emit(
            session,
            account_id=account.id,
            type="subscription.renewal_failed",
            data={
                "subscription_id": sub.id,
                "plan_id": plan.id,
                "period_start": start.isoformat(),
                "due_since": sub.current_period_end.isoformat(),
                "reason": exc.detail,
            },
            # once per missed renewal, however often it is retried
            dedupe_key=f"subscription.renewal_failed:{sub.id}:{sub.current_period_end.isoformat()}",
        )
        return False
    sub.status = "active"
    sub.current_period_start, sub.current_period_end = start, add_months(start)
    emit(
        session,
        account_id=account.id,
        type="subscription.renewed",
        data={
            "subscription_id": sub.id,
            "plan_id": plan.id,
            "period_start": start.isoformat(),
            "period_end": sub.current_period_end.isoformat(),
        },
        dedupe_key=f"subscription.renewed:{sub.id}:{start.isoformat()}",
    )
    return True
