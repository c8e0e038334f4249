"""Top-ups: paid credit plus the bonus the rule in force gives (refunds: ``wallet/refunds.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ledger.accounts import AccountRef
from ledger.amounts import Amount
from ledger.amounts import parse_money as parse_money_in
from ledger.base import utcnow
from ledger.errors import DomainError, IdempotencyConflict, InvalidAmount, NotFound
from ledger.ids import new_id
from ledger.journal import Leg, post_entry
from ledger.locks import lock_key, xact_lock
from plans.catalog import BonusGrant, bonus_for_topup
from wallet.accounts import EVERYTHING, Scope, get_account, lock_owned
from wallet.burn_order import BONUS, PAID
from wallet.errors import Conflict, InvalidRequest, ReferenceUsed
from wallet.ledger_accounts import (
    book_of,
    cash_for_method,
    currency_of,
    customer_ledger,
    house_ledger,
)
from wallet.models import Account, CreditLot, Topup

Method = Literal["bank_transfer", "stripe", "reseller"]


class PaymentsNotConfigured(DomainError):
    """Card payments need Stripe keys, which this deployment does not have."""

    code = "payments_not_configured"


def parse_money(value: str, account: Account, *, what: str) -> Amount:
    """A positive amount in whole minor units of the account's currency (money from outside).

    Raises:
        InvalidAmount: see :func:`ledger.amounts.parse_money`.
    """
    return parse_money_in(value, currency_of(account), what=what, positive=True)


class PaidExpiryNotAllowed(DomainError):
    """Paid credit given an expiry where the operator's terms do not allow it."""

    code = "paid_expiry_not_allowed"


@dataclass(frozen=True, slots=True)
class TopupResult:
    """A top-up and whether it was a replay of an earlier request."""

    topup: Topup
    replayed: bool


def _check_reference(session: Session, method: Method, reference: str | None) -> None:
    """A bank transfer's reference identifies one incoming transfer: it credits one top-up.

    Writers of the same reference serialize on a transaction lock, then look for it.

    Raises:
        ReferenceUsed: a top-up already recorded this bank reference.
    """
    if method != "bank_transfer" or not reference:
        return
    xact_lock(session, [lock_key("bank-reference", reference)])
    prior = session.scalars(
        select(Topup).where(Topup.method == "bank_transfer", Topup.reference == reference)
    ).first()
    if prior is not None:
        raise ReferenceUsed(
            f"bank reference {reference!r} was already recorded as top-up {prior.id} of account"
            f" {prior.account_id}: a reference identifies one transfer. To retry a request whose"
            " answer was lost, send it again with the same Idempotency-Key"
        )


def _check_method(account: Account, method: Method) -> None:
    if method == "reseller" and account.parent_id is None:
        raise InvalidRequest(
            "method 'reseller' is for top-ups a reseller records on its sub-accounts"
        )
    if method in ("bank_transfer", "stripe") and account.parent_id is not None:
        raise InvalidRequest(
            "a sub-account's money is collected by its reseller; record it with method 'reseller'"
        )


def _prior_topup(
    session: Session, account: Account, idempotency_key: str, money: Amount, method: Method
) -> Topup | None:
    prior = session.scalars(
        select(Topup).where(
            Topup.account_id == account.id, Topup.idempotency_key == idempotency_key
        )
    ).one_or_none()
    if prior is not None and (prior.amount != money.atoms or prior.method != method):
        raise IdempotencyConflict(
            f"idempotency key {idempotency_key!r} was used for another top-up ({prior.id})"
        )
    return prior


def _credit(
    session: Session,
    account: Account,
    topup: Topup,
    *,
    cash: AccountRef,
    bonus_at: datetime | None,
    effective_at: datetime | None = None,
    paid_expires_at: datetime | None = None,
) -> None:
    """Credit a top-up.

    One entry (cash to prepaid, promotions to bonus), a paid lot and, when ``bonus_at`` is given, a
    bonus lot by the rule in force at that moment.

    The one crediting path for every kind of top-up (bank transfer, reseller, card).
    """
    unit = currency_of(account)
    money = Amount(topup.amount, unit)
    grant = _bonus_grant(session, account, money, bonus_at)
    cust = customer_ledger(session, account)
    house = house_ledger(session, book_of(account), unit)
    legs = [Leg(cash.id, money), Leg(cust.prepaid.id, -money)]
    if grant is not None:
        legs += [Leg(house.promotions.id, grant.amount), Leg(cust.bonus.id, -grant.amount)]
    entry = post_entry(
        session,
        legs,
        description=f"top-up {topup.id} ({topup.method})",
        idempotency_key=f"topup:{topup.id}",
        effective_at=effective_at,
        metadata={"topup_id": topup.id, "account_id": account.id},
    )
    paid_lot = _topup_lot(topup, PAID, cust.prepaid.id, money, expires_at=paid_expires_at)
    session.add(paid_lot)
    bonus_lot = None
    if grant is not None:
        assert bonus_at is not None
        expires = bonus_at + timedelta(days=grant.expires_days) if grant.expires_days else None
        bonus_lot = _topup_lot(
            topup, BONUS, cust.bonus.id, grant.amount, expires_at=expires, valid_from=bonus_at
        )
        session.add(bonus_lot)
        topup.bonus = grant.amount.atoms
        topup.bonus_rule_id = grant.rule_id
    session.flush()
    topup.status = "succeeded"
    topup.paid_lot_id = paid_lot.id
    topup.bonus_lot_id = bonus_lot.id if bonus_lot else None
    topup.entry_id = entry.id
    session.add(topup)
    session.flush()


def _bonus_grant(
    session: Session, account: Account, money: Amount, at: datetime | None
) -> BonusGrant | None:
    """The bonus the rule in force at ``at`` gives a top-up of ``money``.

    None: no bonus, or none asked for.
    """
    if at is None:
        return None
    grant = bonus_for_topup(
        session, currency=money.unit, amount=money, at=at, owner_account_id=account.parent_id
    )
    return grant if grant is not None and grant.amount.atoms > 0 else None


def _topup_lot(
    topup: Topup,
    kind: str,
    ledger_account_id: int,
    amount: Amount,
    *,
    expires_at: datetime | None,
    valid_from: datetime | None = None,
) -> CreditLot:
    """A new lot of a top-up's credit (paid or bonus), all of it unspent."""
    return CreditLot(
        account_id=topup.account_id,
        kind=kind,
        unit=amount.unit.code,
        ledger_account_id=ledger_account_id,
        granted=amount.atoms,
        remaining=amount.atoms,
        expires_at=expires_at,
        valid_from=valid_from,
        source_type="topup",
        source_id=topup.id,
    )


def _check_paid_expiry(days: int | None, allowed: bool) -> None:
    """Paid credit may be given an expiry only where the operator's terms allow it.

    Raises:
        PaidExpiryNotAllowed: an expiry the terms do not allow.
        InvalidRequest: fewer than one day.
    """
    if days is None:
        return
    if not allowed:
        raise PaidExpiryNotAllowed(
            "paid credit does not expire under the operator's terms; leave"
            " paid_expires_in_days out (an operator whose terms allow it sets"
            " TOKENWALLET_PAID_CREDIT_EXPIRY_ALLOWED)"
        )
    if days < 1:
        raise InvalidRequest("paid_expires_in_days must be at least 1")


def _pending(
    account: Account,
    method: Method,
    money: Amount,
    reference: str | None,
    idempotency_key: str | None,
) -> Topup:
    """A new top-up row, ``pending`` until credited."""
    return Topup(
        id=new_id("top"),
        account_id=account.id,
        method=method,
        status="pending",
        amount=money.atoms,
        reference=reference,
        idempotency_key=idempotency_key,
    )


def record_topup(
    session: Session,
    account_id: str,
    *,
    amount: str,
    method: Method,
    reference: str | None = None,
    idempotency_key: str | None = None,
    at: datetime | None = None,
    scope: Scope = EVERYTHING,
    paid_expires_in_days: int | None = None,
    paid_expiry_allowed: bool = False,
) -> TopupResult:
    """Credit an account with money received (bank transfer, or collected by its reseller).

    Paid credit never expires unless ``paid_expires_in_days`` is given, which is refused
    (``paid_expiry_not_allowed``) unless the operator's terms allow it
    (``paid_expiry_allowed``); its unspent part then goes to ``revenue:breakage`` at expiry
    (the lot expiry job).

    A separate bonus lot is granted by the bonus rule in force (the reseller's rules for a
    sub-account, the operator's otherwise). Idempotent per account and ``idempotency_key``.

    Raises:
        NotFound: the account is not visible to the caller.
        InvalidAmount: see :func:`parse_money`.
        PaymentsNotConfigured: ``method="stripe"``: card money is credited only when the
            payment provider confirms it (:func:`create_pending_topup`, :func:`settle_topup`).
        IdempotencyConflict: the key was used for a different top-up of this account.
    """
    _check_paid_expiry(paid_expires_in_days, paid_expiry_allowed)
    account = get_account(session, account_id, scope=scope, lock=True)
    money = parse_money(amount, account, what="amount")
    if method == "stripe":
        raise PaymentsNotConfigured(
            "card top-ups are credited only by a verified payment webhook; start one through"
            " the payments service (POST /v1/accounts/{id}/topups with Stripe configured)"
        )
    _check_method(account, method)
    if idempotency_key:
        prior = _prior_topup(session, account, idempotency_key, money, method)
        if prior is not None:
            return TopupResult(prior, True)
    _check_reference(session, method, reference)
    when = at or utcnow()
    topup = _pending(account, method, money, reference, idempotency_key)
    house = house_ledger(session, book_of(account), currency_of(account))
    _credit(
        session,
        account,
        topup,
        cash=cash_for_method(house, method),
        bonus_at=when,
        effective_at=when,
        paid_expires_at=(
            when + timedelta(days=paid_expires_in_days) if paid_expires_in_days else None
        ),
    )
    return TopupResult(topup, False)


def create_pending_topup(
    session: Session,
    account_id: str,
    *,
    amount: str | Amount,
    method: Method = "stripe",
    reference: str | None = None,
    idempotency_key: str | None = None,
    scope: Scope = EVERYTHING,
) -> TopupResult:
    """Record a top-up whose money has not arrived yet (``pending``); nothing is credited.

    :func:`settle_topup` credits it when the payment is confirmed, :func:`fail_topup` marks it
    failed. Card money is for top-level accounts only (a sub-account's money is collected by its
    reseller). Idempotent per account and ``idempotency_key``. Takes no lock on the account, so
    a slow payment provider call made in the same transaction does not block its usage.

    Raises:
        NotFound: the account is not visible to the caller.
        InvalidAmount: see :func:`parse_money`.
        InvalidRequest: a sub-account.
        IdempotencyConflict: the key was used for a different top-up of this account.
    """
    account = get_account(session, account_id, scope=scope)
    money = amount if isinstance(amount, Amount) else parse_money(amount, account, what="amount")
    if money.unit.code != account.currency or money.atoms <= 0:
        raise InvalidAmount(f"a top-up of account {account.id} is a positive {account.currency}")
    _check_method(account, method)
    if idempotency_key:
        prior = _prior_topup(session, account, idempotency_key, money, method)
        if prior is not None:
            return TopupResult(prior, True)
    topup = _pending(account, method, money, reference, idempotency_key)
    try:
        with session.begin_nested():
            session.add(topup)
            session.flush()
    except IntegrityError as exc:
        raise Conflict(
            f"a concurrent request created a top-up with idempotency key {idempotency_key!r};"
            " retry to get it"
        ) from exc
    return TopupResult(topup, False)


def lock_topup(session: Session, topup_id: str) -> Topup:
    """Lock a top-up's account row, then the top-up row, and return the top-up read fresh.

    The wallet's lock order: the account row first (usage rewrites lots under it alone, and
    new lots reference the account, so crediting needs it first), then the top-up, then its
    lots (:func:`lock_topup_lots`), then ledger accounts.

    Raises:
        NotFound: no such top-up.
    """
    return lock_owned(session, Topup, topup_id, "top-up")


def lock_topup_lots(session: Session, topup: Topup) -> tuple[CreditLot, CreditLot | None]:
    """Lock a credited top-up's paid lot and bonus lot (by id) under its account's row lock.

    Returns:
        ``(paid lot, bonus lot or None)``.
    """
    lot_ids = [i for i in (topup.paid_lot_id, topup.bonus_lot_id) if i is not None]
    lots = {
        lot.id: lot
        for lot in session.scalars(
            select(CreditLot)
            .where(CreditLot.id.in_(lot_ids))
            .order_by(CreditLot.id)
            .with_for_update()
        )
    }
    assert topup.paid_lot_id is not None
    bonus_lot = lots.get(topup.bonus_lot_id) if topup.bonus_lot_id else None
    return lots[topup.paid_lot_id], bonus_lot


def settle_topup(
    session: Session,
    topup_id: str,
    *,
    with_bonus: bool = True,
    effective_at: datetime | None = None,
) -> Topup:
    """Credit a pending (or failed) top-up now that its money arrived.

    A settled one is left as it is (exactly once: the top-up row is locked and the entry has a
    unique key).

    The bonus is the one the rule in force when the top-up was started gives (the offer the
    customer accepted at checkout). Card money lands in ``cash:stripe``.

    Args:
        session: the caller's transaction.
        topup_id: the top-up whose money arrived.
        with_bonus: False for money that pays a purchase (no top-up bonus).
        effective_at: when the money moved (the provider's time), for the ledger entry.

    Raises:
        NotFound: no such top-up.
    """
    topup = lock_topup(session, topup_id)
    if topup.status == "succeeded":
        return topup
    account = get_account(session, topup.account_id)
    house = house_ledger(session, book_of(account), currency_of(account))
    _credit(
        session,
        account,
        topup,
        cash=cash_for_method(house, topup.method),
        bonus_at=topup.created_at if with_bonus else None,
        effective_at=effective_at,
    )
    return topup


def fail_topup(session: Session, topup_id: str) -> Topup:
    """Mark a pending top-up failed (the payment did not go through); settled ones stay.

    Raises:
        NotFound: no such top-up.
    """
    topup = session.scalars(
        select(Topup).where(Topup.id == topup_id).with_for_update()
    ).one_or_none()
    if topup is None:
        raise NotFound(f"top-up {topup_id} does not exist")
    if topup.status == "pending":
        topup.status = "failed"
        session.flush()
    return topup
