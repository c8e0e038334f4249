"""Top-ups (paid credit plus bonus) and refunds of unspent paid credit with bonus clawback."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.errors import DomainError, IdempotencyConflict, InvalidAmount, NotFound
from ledger.journal import Leg, post_entry
from plans.catalog import bonus_for_topup
from wallet.accounts import EVERYTHING, Scope, get_account
from wallet.burn import BONUS, PAID
from wallet.chart import book_of, currency_of, customer_ledger, house_ledger
from wallet.errors import InvalidRequest, RefundTooLarge
from wallet.ids import new_id
from wallet.models import Account, CreditLot, Topup

Method = Literal["bank_transfer", "stripe", "reseller"]


class PaymentsNotConfigured(DomainError):
    """Card payments need Stripe keys, which this deployment does not have."""

    code = "payments_not_configured"


def parse_money(value: str, account: Account, *, what: str) -> Amount:
    """A positive amount in whole minor units of the account's currency (money from outside).

    Raises:
        InvalidAmount: not a number, not positive, or finer than the currency's minor unit.
    """
    unit = currency_of(account)
    amount = Amount.parse(value, unit)
    if amount.atoms <= 0:
        raise InvalidAmount(f"{what} must be greater than zero; got {value}")
    if amount.atoms % unit.atoms_per_minor:
        raise InvalidAmount(
            f"{what} {value} has more decimals than {unit.code} allows ({unit.minor_exponent})"
        )
    return amount


@dataclass(frozen=True, slots=True)
class TopupResult:
    """A top-up and whether it was a replay of an earlier request."""

    topup: Topup
    replayed: bool


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
) -> TopupResult:
    """Credit an account with money received (bank transfer, or collected by its reseller).

    A separate bonus lot is granted by the bonus rule in force (the reseller's rules for a
    sub-account, the operator's otherwise). Idempotent per account and ``idempotency_key``.

    Raises:
        NotFound: the account is not visible to the caller.
        InvalidAmount: see :func:`parse_money`.
        PaymentsNotConfigured: ``method="stripe"``: card top-ups go through Stripe Checkout.
        IdempotencyConflict: the key was used for a different top-up of this account.
    """
    account = get_account(session, account_id, scope=scope, lock=True)
    money = parse_money(amount, account, what="amount")
    if method == "stripe":
        raise PaymentsNotConfigured(
            "card top-ups need Stripe keys (STRIPE_API_KEY); use method bank_transfer meanwhile"
        )
    if method == "reseller" and account.parent_id is None:
        raise InvalidRequest(
            "method 'reseller' is for top-ups a reseller records on its sub-accounts"
        )
    if method == "bank_transfer" and account.parent_id is not None:
        raise InvalidRequest(
            "a sub-account's money is collected by its reseller; record it with method 'reseller'"
        )
    if idempotency_key:
        prior = session.scalars(
            select(Topup).where(
                Topup.account_id == account.id, Topup.idempotency_key == idempotency_key
            )
        ).one_or_none()
        if prior is not None:
            if prior.amount != money.atoms or prior.method != method:
                raise IdempotencyConflict(
                    f"idempotency key {idempotency_key!r} was used for another top-up ({prior.id})"
                )
            return TopupResult(prior, True)
    when = at or utcnow()
    unit = currency_of(account)
    grant = bonus_for_topup(
        session, currency=unit, amount=money, at=when, owner_account_id=account.parent_id
    )
    cust = customer_ledger(session, account)
    house = house_ledger(session, book_of(account), unit)
    topup = Topup(
        id=new_id("top"),
        account_id=account.id,
        method=method,
        status="succeeded",
        amount=money.atoms,
        reference=reference,
        idempotency_key=idempotency_key,
    )
    legs = [Leg(house.cash.id, money), Leg(cust.prepaid.id, -money)]
    bonus = grant.amount if grant and grant.amount.atoms > 0 else None
    if bonus is not None:
        legs += [Leg(house.promotions.id, bonus), Leg(cust.bonus.id, -bonus)]
    entry = post_entry(
        session,
        legs,
        description=f"top-up {topup.id} ({method})",
        idempotency_key=f"topup:{topup.id}",
        effective_at=when,
        metadata={"topup_id": topup.id, "account_id": account.id},
    )
    paid_lot = CreditLot(
        account_id=account.id,
        kind=PAID,
        unit=unit.code,
        ledger_account_id=cust.prepaid.id,
        granted=money.atoms,
        remaining=money.atoms,
        source_type="topup",
        source_id=topup.id,
    )
    session.add(paid_lot)
    bonus_lot = None
    if bonus is not None and grant is not None:
        expires = when + timedelta(days=grant.expires_days) if grant.expires_days else None
        bonus_lot = CreditLot(
            account_id=account.id,
            kind=BONUS,
            unit=unit.code,
            ledger_account_id=cust.bonus.id,
            granted=bonus.atoms,
            remaining=bonus.atoms,
            expires_at=expires,
            source_type="topup",
            source_id=topup.id,
        )
        session.add(bonus_lot)
        topup.bonus = bonus.atoms
        topup.bonus_rule_id = grant.rule_id
    session.flush()
    topup.paid_lot_id = paid_lot.id
    topup.bonus_lot_id = bonus_lot.id if bonus_lot else None
    topup.entry_id = entry.id
    session.add(topup)
    session.flush()
    return TopupResult(topup, False)


@dataclass(frozen=True, slots=True)
class Refund:
    """What a refund gave back and took back."""

    topup_id: str
    refunded: Amount
    bonus_clawed_back: Amount
    entry_id: int


def refund_topup(
    session: Session,
    topup_id: str,
    *,
    amount: str | None = None,
    reason: str = "",
    scope: Scope = EVERYTHING,
) -> Refund:
    """Refund unspent paid credit of a top-up, clawing back the proportional unspent bonus.

    The rule: at most the top-up's unspent paid credit can be refunded (a larger refund is
    rejected, ``refund_exceeds_unspent``). Refunding a share ``r`` of the unspent paid credit
    claws back the same share of the top-up's unspent bonus (rounded down to the atom, in the
    customer's favour).

    Raises:
        NotFound: no such top-up visible to the caller.
        RefundTooLarge: more than the unspent paid credit.
    """
    seen = session.get(Topup, topup_id)
    if seen is None:
        raise NotFound(f"top-up {topup_id} does not exist")
    account = get_account(session, seen.account_id, scope=scope, lock=True)
    topup = session.scalars(
        select(Topup)
        .where(Topup.id == topup_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    unit = currency_of(account)
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
    paid = lots[topup.paid_lot_id]
    unspent = Amount(paid.remaining, unit)
    wanted = parse_money(amount, account, what="refund amount") if amount else unspent
    if wanted.atoms == 0:
        raise RefundTooLarge(f"top-up {topup_id} has no unspent paid credit left to refund")
    if wanted > unspent:
        raise RefundTooLarge(
            f"top-up {topup_id} has {unspent} of unspent paid credit; cannot refund {wanted}",
            unspent=unspent.format(),
        )
    bonus_lot = lots.get(topup.bonus_lot_id) if topup.bonus_lot_id else None
    clawback = Amount(0, unit)
    if bonus_lot is not None and bonus_lot.remaining:
        clawback = Amount(bonus_lot.remaining * wanted.atoms // unspent.atoms, unit)
    cust = customer_ledger(session, account)
    house = house_ledger(session, book_of(account), unit)
    legs = [Leg(cust.prepaid.id, wanted), Leg(house.cash.id, -wanted)]
    if clawback.atoms:
        legs += [Leg(cust.bonus.id, clawback), Leg(house.promotions.id, -clawback)]
    entry = post_entry(
        session,
        legs,
        description=f"refund of top-up {topup_id}: {reason}".strip(": "),
        metadata={"topup_id": topup_id, "reason": reason},
    )
    paid.remaining -= wanted.atoms
    if bonus_lot is not None:
        bonus_lot.remaining -= clawback.atoms
    topup.refunded += wanted.atoms
    topup.bonus_clawed_back += clawback.atoms
    session.flush()
    return Refund(topup_id, wanted, clawback, entry.id)
