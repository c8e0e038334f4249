"""Gateway holds: ``authorize`` reserves an estimate through the burn order; a usage record
that names the hold captures the actual amount; void and expiry give the rest back.

A reservation takes amounts out of everything that could pay: credit lots, plan quota windows
and overage headroom of the account, and, for a reseller's sub-account, the reseller's float at
the wholesale price. It also writes a pending ledger entry (so ``held`` shows in balances).
Capture, void and expiry each lock the account rows, then the authorization row, so exactly one
of them resolves a hold, and each gives back exactly what was reserved.

Lots that would expire before the hold do not back it, and a lot with an open reservation is
not expired until the reservation is resolved (``wallet.lots.expire_lots``), so what a hold
gives back always returns to a live lot.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.errors import DomainError, NotFound
from ledger.journal import Leg, create_hold
from ledger.units import TOKENS
from plans.pricing import resolve_account_price
from wallet.accounts import EVERYTHING, Scope, get_account, lock_accounts
from wallet.burn import BONUS, OVERAGE, PAID
from wallet.burndown import (
    LEDGER_GRACE,
    MONEY_SOURCES,
    Draw,
    WalletState,
    draw,
    give_back,
    load_wallets,
    release_ledger_hold,
    reserve,
)
from wallet.charging import rate_atoms
from wallet.chart import book_of, customer_ledger, house_ledger
from wallet.errors import InvalidRequest
from wallet.ids import new_id
from wallet.models import Account, Authorization
from wallet.normalize import Tokens


def hold_legs(session: Session, w: WalletState, d: Draw) -> list[Leg]:
    """The ledger legs a draw would post for ``w``'s account (money to usage revenue, package
    tokens to consumed), in the account's book."""
    cust = customer_ledger(session, w.account)
    house = house_ledger(session, book_of(w.account), w.unit)
    legs: list[Leg] = []
    total = 0
    for kind, acct in (
        (BONUS, cust.bonus),
        (PAID, cust.prepaid),
        (OVERAGE, cust.receivable_unbilled),
    ):
        atoms = d.money.get(kind, 0)
        if atoms:
            legs.append(Leg(acct.id, Amount(atoms, w.unit)))
            total += atoms
    if total:
        legs.append(Leg(house.revenue_usage.id, Amount(-total, w.unit)))
    if d.package_tokens:
        t = Amount(d.package_tokens, TOKENS)
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
    seen = get_account(session, account_id, scope=scope)
    locked = lock_accounts(session, [seen.id])
    account = locked[seen.id]
    auth = Authorization(
        id=new_id("auth"),
        account_id=account.id,
        model=model,
        status="approved",
        expires_at=when + ttl,
    )

    def decline(code: str | None) -> Authorization:
        auth.status, auth.decline_code = "declined", code
        session.add(auth)
        session.flush()
        return auth

    try:
        resolved = resolve_account_price(
            session,
            model=model,
            at=when,
            currency=account.currency,
            account_id=account.id,
            reseller_account_id=account.parent_id,
            standing_discounts=account.discounts,
        )
    except DomainError as exc:
        return decline(exc.code)
    tokens = Tokens(input_tokens=estimated_input_tokens, output_tokens=max_output_tokens)
    money, _ = rate_atoms(tokens, resolved.price, batch=False)
    wallets = load_wallets(session, locked.values())
    w = wallets[account.id]
    d, _, refusal = draw(w, model, money, tokens.total, when, valid_at=auth.expires_at)
    if d is None:
        return decline(refusal)
    wholesale: tuple[WalletState, Draw] | None = None
    if account.parent_id and resolved.wholesale is not None:
        rw = wallets[account.parent_id]
        wmoney, _ = rate_atoms(tokens, resolved.wholesale.price, batch=False)
        rd, _, _ = draw(
            rw, model, wmoney, tokens.total, when, sources=MONEY_SOURCES, valid_at=auth.expires_at
        )
        if rd is None:
            return decline("reseller_float_exhausted")
        wholesale = (rw, rd)
    reserve(auth, (w, d), wholesale, when)
    legs = hold_legs(session, w, d)
    if wholesale is not None:
        legs += hold_legs(session, *wholesale)
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


def _release(
    session: Session,
    locked: dict[str, Account],
    auths: list[Authorization],
    status: str,
    at: datetime,
) -> None:
    """Give the reservations of approved holds back; ``locked``: their account rows (and the
    resellers'), locked by the caller."""
    if not auths:
        return
    reserved = [lot_id for a in auths for lot_id, _ in a.reserved]
    wallets = load_wallets(session, locked.values(), reserved)
    for auth in auths:
        give_back(auth, wallets)
        release_ledger_hold(session, auth, status, at)
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
    seen = session.get(Authorization, authorization_id)
    if seen is None:
        raise NotFound(f"authorization {authorization_id} does not exist")
    account = get_account(session, seen.account_id, scope=scope)
    locked = lock_accounts(session, [account.id])
    auth = session.scalars(
        select(Authorization)
        .where(Authorization.id == authorization_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    if auth.status == "approved":
        _release(session, locked, [auth], "voided", at or utcnow())
    return auth


def expire_authorizations(
    session: Session, *, now: datetime | None = None, limit: int = 500
) -> list[str]:
    """Release every approved hold past its expiry, exactly once."""
    at = now or utcnow()
    due = session.execute(
        select(Authorization.id, Authorization.account_id)
        .where(Authorization.status == "approved", Authorization.expires_at <= at)
        .order_by(Authorization.expires_at)
        .limit(limit)
    ).all()
    if not due:
        return []
    locked = lock_accounts(session, {row.account_id for row in due})
    auths = list(
        session.scalars(
            select(Authorization)
            .where(
                Authorization.id.in_([row.id for row in due]),
                Authorization.status == "approved",
            )
            .order_by(Authorization.id)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
    )
    _release(session, locked, auths, "expired", at)
    return [a.id for a in auths]
