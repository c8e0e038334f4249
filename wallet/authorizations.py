"""Gateway holds: ``authorize`` reserves an estimate through the burn order; a usage record
that names the hold captures the actual amount; void and expiry give the rest back.

Reservations take amounts out of the lots (so nothing else can spend them) and put a pending
entry in the ledger (so ``held`` shows in the balance). Capture, void and expiry each lock the
authorization row first, so exactly one of them resolves a hold.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.errors import DomainError, NotFound
from ledger.journal import Leg, create_hold, void_hold
from ledger.units import TOKENS
from plans.pricing import resolve_account_price
from wallet.accounts import EVERYTHING, Scope, get_account
from wallet.burn import BONUS, OVERAGE, PAID
from wallet.charging import _Draw, _load_wallets, _plan_draw, rate_atoms
from wallet.chart import book_of, currency_of, customer_ledger, house_ledger
from wallet.errors import InvalidRequest
from wallet.ids import new_id
from wallet.models import Account, Authorization, CreditLot
from wallet.normalize import Tokens

#: The ledger hold outlives the authorization, so the wallet's expiry (which also returns the
#: lots) always resolves it; the ledger's own expiry job is only a backstop.
LEDGER_GRACE = timedelta(hours=1)


def _hold_legs(session: Session, account_id: str, draw: _Draw) -> list[Leg]:
    account = session.get_one(Account, account_id)
    cust = customer_ledger(session, account)
    unit = currency_of(account)
    house = house_ledger(session, book_of(account), unit)
    legs: list[Leg] = []
    total = 0
    for kind, acct in (
        (BONUS, cust.bonus),
        (PAID, cust.prepaid),
        (OVERAGE, cust.receivable_unbilled),
    ):
        atoms = draw.money.get(kind, 0)
        if atoms:
            legs.append(Leg(acct.id, Amount(atoms, unit)))
            total += atoms
    if total:
        legs.append(Leg(house.revenue_usage.id, Amount(-total, unit)))
    if draw.package_tokens:
        t = Amount(draw.package_tokens, TOKENS)
        legs += [Leg(cust.package_tokens.id, t), Leg(house.tokens_consumed.id, -t)]
    return legs


def authorize(
    session: Session,
    *,
    account_id: str,
    model: str,
    estimated_input_tokens: int,
    max_output_tokens: int,
    ttl: timedelta,
    scope: Scope = EVERYTHING,
    at: datetime | None = None,
) -> Authorization:
    """Reserve the most a call can cost; decline with a code when nothing can cover it.

    Raises:
        NotFound: the account is not visible to the caller.
        InvalidRequest: negative token estimates.
    """
    if estimated_input_tokens < 0 or max_output_tokens < 0:
        raise InvalidRequest("token estimates must not be negative")
    when = at or utcnow()
    account = get_account(session, account_id, scope=scope)
    auth = Authorization(
        id=new_id("auth"),
        account_id=account.id,
        model=model,
        status="approved",
        expires_at=when + ttl,
    )
    try:
        resolved = resolve_account_price(
            session,
            model=model,
            at=when,
            currency=account.currency,
            account_id=account.id,
            reseller_account_id=account.parent_id,
        )
    except DomainError as exc:
        auth.status, auth.decline_code = "declined", exc.code
        session.add(auth)
        session.flush()
        return auth
    tokens = Tokens(input_tokens=estimated_input_tokens, output_tokens=max_output_tokens)
    money, _ = rate_atoms(tokens, resolved.price, batch=False)
    wallet = _load_wallets(session, [account], when)[account.id]
    draw, _, _, refusal = _plan_draw(wallet, model, money, tokens.total, when)
    if draw is None:
        auth.status, auth.decline_code = "declined", refusal
        session.add(auth)
        session.flush()
        return auth
    if account.parent_id and resolved.wholesale is not None:
        wholesale, _ = rate_atoms(tokens, resolved.wholesale.price, batch=False)
        parent = _load_wallets(session, [get_account(session, account.parent_id)], when)
        rw = parent[account.parent_id]
        rw.order = tuple(s for s in rw.order if s in (BONUS, PAID, OVERAGE))
        rw.plan = None
        if _plan_draw(rw, model, wholesale, tokens.total, when)[0] is None:
            auth.status, auth.decline_code = "declined", "reseller_float_exhausted"
            session.add(auth)
            session.flush()
            return auth
    for lot, take in draw.lots:
        lot.remaining -= take
    auth.reserved = [[lot.id, take] for lot, take in draw.lots]
    auth.held_money = sum(v for k, v in draw.money.items() if k in (BONUS, PAID, OVERAGE))
    auth.overage = draw.money.get(OVERAGE, 0)
    auth.held_tokens = draw.package_tokens
    auth.plan_covered = bool(draw.plan_requests)
    legs = _hold_legs(session, account.id, draw)
    if legs:
        hold = create_hold(
            session,
            legs,
            expires_at=auth.expires_at + LEDGER_GRACE,
            description=f"authorization {auth.id}",
            metadata={"authorization_id": auth.id},
        )
        auth.hold_entry_id = hold.id
    session.add(auth)
    session.flush()
    return auth


def release(session: Session, auth: Authorization, status: str, *, at: datetime) -> None:
    """Give a hold's reservation back to its lots and void its ledger hold (row locked)."""
    if auth.reserved:
        lots = {
            lot.id: lot
            for lot in session.scalars(
                select(CreditLot)
                .where(CreditLot.id.in_([lot_id for lot_id, _ in auth.reserved]))
                .order_by(CreditLot.id)
                .with_for_update()
            )
        }
        for lot_id, atoms in auth.reserved:
            lot = lots[lot_id]
            if lot.expired_at is None:
                lot.remaining += atoms
    if auth.hold_entry_id is not None:
        void_hold(
            session, auth.hold_entry_id, description=f"authorization {auth.id} {status}", now=at
        )
    auth.status, auth.resolved_at = status, at
    session.flush()


def void_authorization(
    session: Session,
    authorization_id: str,
    *,
    scope: Scope = EVERYTHING,
    at: datetime | None = None,
) -> Authorization:
    """Release an approved hold now. Voiding a resolved hold changes nothing.

    Raises:
        NotFound: unknown or invisible authorization.
    """
    auth = session.scalars(
        select(Authorization).where(Authorization.id == authorization_id).with_for_update()
    ).one_or_none()
    if auth is None:
        raise NotFound(f"authorization {authorization_id} does not exist")
    get_account(session, auth.account_id, scope=scope)
    if auth.status == "approved":
        release(session, auth, "voided", at=at or utcnow())
    return auth


def expire_authorizations(
    session: Session, *, now: datetime | None = None, limit: int = 500
) -> list[str]:
    """Release every approved hold past its expiry, exactly once."""
    at = now or utcnow()
    due = session.scalars(
        select(Authorization)
        .where(Authorization.status == "approved", Authorization.expires_at <= at)
        .order_by(Authorization.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for auth in due:
        release(session, auth, "expired", at=at)
    return [a.id for a in due]
