"""Top-ups (paid credit plus bonus) and refunds of unspent paid credit with bonus clawback."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ledger.accounts import AccountRef
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.errors import DomainError, IdempotencyConflict, InvalidAmount, NotFound
from ledger.ids import new_id
from ledger.journal import Leg, post_entry
from ledger.locks import lock_key, xact_lock
from ledger.models import JournalEntry, LedgerAccount, Posting
from plans.catalog import bonus_for_topup
from wallet.accounts import EVERYTHING, Scope, get_account
from wallet.burn import BONUS, PAID
from wallet.chart import (
    book_of,
    cash_for_method,
    currency_of,
    customer_ledger,
    house_ledger,
    reversal_receivable,
)
from wallet.errors import Conflict, InvalidRequest, ReferenceUsed, RefundTooLarge
from wallet.models import Account, CreditFreeze, CreditLot, Topup

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
    """Credit a top-up: one entry (cash to prepaid, promotions to bonus), a paid lot and, when
    ``bonus_at`` is given, a bonus lot by the rule in force at that moment.

    The one crediting path for every kind of top-up (bank transfer, reseller, card).
    """
    unit = currency_of(account)
    money = Amount(topup.amount, unit)
    grant = (
        bonus_for_topup(
            session, currency=unit, amount=money, at=bonus_at, owner_account_id=account.parent_id
        )
        if bonus_at is not None
        else None
    )
    cust = customer_ledger(session, account)
    house = house_ledger(session, book_of(account), unit)
    legs = [Leg(cash.id, money), Leg(cust.prepaid.id, -money)]
    bonus = grant.amount if grant and grant.amount.atoms > 0 else None
    if bonus is not None:
        legs += [Leg(house.promotions.id, bonus), Leg(cust.bonus.id, -bonus)]
    entry = post_entry(
        session,
        legs,
        description=f"top-up {topup.id} ({topup.method})",
        idempotency_key=f"topup:{topup.id}",
        effective_at=effective_at,
        metadata={"topup_id": topup.id, "account_id": account.id},
    )
    paid_lot = CreditLot(
        account_id=account.id,
        kind=PAID,
        unit=unit.code,
        ledger_account_id=cust.prepaid.id,
        granted=money.atoms,
        remaining=money.atoms,
        expires_at=paid_expires_at,
        source_type="topup",
        source_id=topup.id,
    )
    session.add(paid_lot)
    bonus_lot = None
    if bonus is not None and grant is not None:
        assert bonus_at is not None
        expires = bonus_at + timedelta(days=grant.expires_days) if grant.expires_days else None
        bonus_lot = CreditLot(
            account_id=account.id,
            kind=BONUS,
            unit=unit.code,
            ledger_account_id=cust.bonus.id,
            granted=bonus.atoms,
            remaining=bonus.atoms,
            expires_at=expires,
            valid_from=bonus_at,
            source_type="topup",
            source_id=topup.id,
        )
        session.add(bonus_lot)
        topup.bonus = bonus.atoms
        topup.bonus_rule_id = grant.rule_id
    session.flush()
    topup.status = "succeeded"
    topup.paid_lot_id = paid_lot.id
    topup.bonus_lot_id = bonus_lot.id if bonus_lot else None
    topup.entry_id = entry.id
    session.add(topup)
    session.flush()


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
    if paid_expires_in_days is not None:
        if not paid_expiry_allowed:
            raise PaidExpiryNotAllowed(
                "paid credit does not expire under the operator's terms; leave"
                " paid_expires_in_days out (an operator whose terms allow it sets"
                " TOKENWALLET_PAID_CREDIT_EXPIRY_ALLOWED)"
            )
        if paid_expires_in_days < 1:
            raise InvalidRequest("paid_expires_in_days must be at least 1")
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
    unit = currency_of(account)
    topup = Topup(
        id=new_id("top"),
        account_id=account.id,
        method=method,
        status="pending",
        amount=money.atoms,
        reference=reference,
        idempotency_key=idempotency_key,
    )
    house = house_ledger(session, book_of(account), unit)
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
    topup = Topup(
        id=new_id("top"),
        account_id=account.id,
        method=method,
        status="pending",
        amount=money.atoms,
        reference=reference,
        idempotency_key=idempotency_key,
    )
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


def _lock_with_account(session: Session, topup_id: str) -> Topup:
    """Lock the top-up's account row, then the top-up row (the wallet's lock order: account,
    then lots, then ledger; new lots reference the account, so crediting needs it first)."""
    topup = session.get(Topup, topup_id)
    if topup is None:
        raise NotFound(f"top-up {topup_id} does not exist")
    get_account(session, topup.account_id, lock=True)
    return session.scalars(
        select(Topup)
        .where(Topup.id == topup_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def settle_topup(
    session: Session,
    topup_id: str,
    *,
    with_bonus: bool = True,
    effective_at: datetime | None = None,
) -> Topup:
    """Credit a pending (or failed) top-up now that its money arrived; a settled one is left
    as it is (exactly once: the top-up row is locked and the entry has a unique key).

    The bonus is the one the rule in force when the top-up was started gives (the offer the
    customer accepted at checkout). Card money lands in ``cash:stripe``.

    Args:
        with_bonus: False for money that pays a purchase (no top-up bonus).
        effective_at: when the money moved (the provider's time), for the ledger entry.

    Raises:
        NotFound: no such top-up.
    """
    topup = _lock_with_account(session, topup_id)
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


@dataclass(frozen=True, slots=True)
class Refund:
    """What a refund gave back and took back.

    Attributes:
        refunded: unspent paid credit reversed.
        bonus_clawed_back: the bonus taken back with it (unspent bonus, plus spent bonus
            withheld or owed).
        receivable: what the customer now owes (``receivable:reversals``): the part of a refund
            that exceeded the unspent credit, and spent bonus, when the money had already left.
        withheld: spent bonus kept back from the payout (money not paid out yet); the payout is
            ``refunded - withheld``.
    """

    topup_id: str
    refunded: Amount
    bonus_clawed_back: Amount
    entry_id: int
    receivable: Amount | None = None
    withheld: Amount | None = None


Excess = Literal["reject", "receivable"]


def unspent_paid(session: Session, topup_id: str) -> Amount:
    """The top-up's paid credit that is still unspent (and not frozen).

    Raises:
        NotFound: no such top-up, or nothing was credited yet.
    """
    topup = session.get(Topup, topup_id)
    if topup is None or topup.paid_lot_id is None:
        raise NotFound(f"top-up {topup_id} does not exist or was not credited")
    lot = session.get_one(CreditLot, topup.paid_lot_id)
    return Amount(lot.remaining, currency_of(get_account(session, topup.account_id)))


def reverse_topup(
    session: Session,
    topup_id: str,
    amount: Amount,
    *,
    on_excess: Excess = "reject",
    reason: str = "",
    idempotency_key: str | None = None,
    effective_at: datetime | None = None,
    scope: Scope = EVERYTHING,
) -> Refund:
    """Give back ``amount`` of a top-up's money: reverse unspent paid credit and take back the
    bonus that came with the money returned.

    The rule: returning ``amount`` of a top-up of ``P`` that came with bonus ``B`` takes back
    ``B x amount / P`` of bonus (cumulative over refunds, rounded down to the atom in the
    customer's favour). It comes out of the top-up's unspent bonus first; bonus already spent
    is the customer's to repay: kept back from what is paid out when the money has not left yet
    (``on_excess="reject"``, e.g. a bank refund: ``withheld``), or booked as owed in
    ``receivable:reversals`` when it has (``"receivable"``: a card refund made at the
    provider). A bonus lot that expired is not charged for (what it had left went back at
    expiry). A refund larger than the unspent paid credit is refused (``"reject"``) or its
    excess booked as owed (``"receivable"``). Frozen credit is not unspent.

    Raises:
        NotFound: no such top-up visible to the caller.
        InvalidRequest: the top-up was never credited.
        RefundTooLarge: more than the unspent paid credit, with ``on_excess="reject"``.
    """
    seen = session.get(Topup, topup_id)
    if seen is None:
        raise NotFound(f"top-up {topup_id} does not exist")
    get_account(session, seen.account_id, scope=scope)  # visibility before any lock
    topup = _lock_with_account(session, topup_id)
    account = get_account(session, topup.account_id, scope=scope)
    unit = currency_of(account)
    if topup.status != "succeeded" or topup.paid_lot_id is None:
        raise InvalidRequest(f"top-up {topup_id} is {topup.status}: nothing was credited")
    if amount.unit.code != unit.code or amount.atoms <= 0:
        raise InvalidAmount(f"a refund of top-up {topup_id} is a positive {unit.code} amount")
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
    paid = lots[topup.paid_lot_id]
    unspent = Amount(paid.remaining, unit)
    excess = Amount(0, unit)
    if amount > unspent:
        if on_excess == "reject":
            raise RefundTooLarge(
                f"top-up {topup_id} has {unspent} of unspent paid credit; cannot refund {amount}",
                unspent=unspent.format(),
            )
        excess = amount - unspent
    refunded = amount - excess
    bonus_lot = lots.get(topup.bonus_lot_id) if topup.bonus_lot_id else None
    # the bonus that goes with the money returned, over all refunds of this top-up so far
    due_total = topup.bonus * min(topup.refunded + amount.atoms, topup.amount) // topup.amount
    due = max(0, due_total - topup.bonus_clawed_back)
    from_lot = 0
    spent_share = 0
    if bonus_lot is not None and bonus_lot.expired_at is None:
        from_lot = min(due, bonus_lot.remaining)
        frozen = sum(
            f.frozen_bonus
            for f in session.scalars(
                select(CreditFreeze).where(
                    CreditFreeze.topup_id == topup.id, CreditFreeze.status == "frozen"
                )
            )
        )
        # spent bonus not reclaimed yet: granted - left - frozen - reclaimed so far
        spent = topup.bonus - bonus_lot.remaining - frozen - topup.bonus_clawed_back
        spent_share = max(0, min(due - from_lot, spent))
    withheld = min(spent_share, refunded.atoms) if on_excess == "reject" else 0
    owed_bonus = spent_share - withheld
    clawback = Amount(from_lot, unit)
    cust = customer_ledger(session, account)
    house = house_ledger(session, book_of(account), unit)
    cash = cash_for_method(house, topup.method)
    legs: list[Leg] = []
    if refunded.atoms:
        legs.append(Leg(cust.prepaid.id, refunded))
        if refunded.atoms - withheld:
            legs.append(Leg(cash.id, Amount(withheld - refunded.atoms, unit)))
        if withheld:
            legs.append(Leg(house.promotions.id, Amount(-withheld, unit)))
    if clawback.atoms:
        legs += [Leg(cust.bonus.id, clawback), Leg(house.promotions.id, -clawback)]
    if excess.atoms or owed_bonus:
        owed = reversal_receivable(session, account)
        if excess.atoms:
            legs += [Leg(owed.id, excess), Leg(cash.id, -excess)]
        if owed_bonus:
            legs += [
                Leg(owed.id, Amount(owed_bonus, unit)),
                Leg(house.promotions.id, Amount(-owed_bonus, unit)),
            ]
    entry = post_entry(
        session,
        legs,
        description=f"refund of top-up {topup_id}: {reason}".strip(": "),
        idempotency_key=idempotency_key,
        effective_at=effective_at,
        metadata={
            "topup_id": topup_id,
            "reason": reason,
            "refunded": refunded.format(),
            "receivable": (excess + Amount(owed_bonus, unit)).format(),
            "withheld": Amount(withheld, unit).format(),
            # exact parts, so a refund that fails later is undone exactly (undo_refund)
            "atoms": {
                "amount": amount.atoms,
                "refunded": refunded.atoms,
                "excess": excess.atoms,
                "bonus_from_lot": from_lot,
                "bonus_owed": owed_bonus,
                "withheld": withheld,
            },
        },
    )
    if not entry.replayed:
        paid.remaining -= refunded.atoms
        if bonus_lot is not None:
            bonus_lot.remaining -= clawback.atoms
        topup.refunded += amount.atoms
        topup.bonus_clawed_back += from_lot + spent_share
    session.flush()
    return Refund(
        topup_id,
        refunded,
        Amount(from_lot + spent_share, unit),
        entry.id,
        excess + Amount(owed_bonus, unit),
        Amount(withheld, unit),
    )


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
    customer's favour). See :func:`reverse_topup`.

    Raises:
        NotFound: no such top-up visible to the caller.
        RefundTooLarge: more than the unspent paid credit.
    """
    topup = session.get(Topup, topup_id)
    if topup is None:
        raise NotFound(f"top-up {topup_id} does not exist")
    account = get_account(session, topup.account_id, scope=scope)
    if topup.method == "stripe":
        raise InvalidRequest(
            f"top-up {topup_id} was paid by card: refund it through the payment provider"
        )
    if amount:
        wanted = parse_money(amount, account, what="refund amount")
    else:
        wanted = unspent_paid(session, topup_id)
        if wanted.atoms == 0:
            raise RefundTooLarge(f"top-up {topup_id} has no unspent paid credit left to refund")
    return reverse_topup(session, topup_id, wanted, reason=reason, scope=scope)


@dataclass(frozen=True, slots=True)
class RefundUndone:
    """What undoing a refund gave back (a refund that failed at the provider).

    Attributes:
        cash: the money that came back (debited to the cash account it left).
        paid: paid credit restored (to the top-up's paid lot, and a new paid lot for debt the
            refund had booked that could no longer be cancelled, e.g. already invoiced).
        bonus: bonus restored to the top-up's bonus lot (with its expiry; nothing when that lot
            has expired since: it would have lapsed).
        debt_cancelled: what the refund had booked as owed (``receivable:reversals``) and is
            cancelled.
    """

    topup_id: str
    cash: Amount
    paid: Amount
    bonus: Amount
    debt_cancelled: Amount
    entry_id: int | None


def _parts_of_refund(
    session: Session, entry_id: int, *, prepaid: int, bonus: int, owed: int, cash: int
) -> dict[str, int]:
    """The exact parts of a refund entry written by :func:`reverse_topup` (its metadata keeps
    them; older entries are read from their postings, which determine them when nothing was
    withheld, as for every card refund)."""
    entry = session.get_one(JournalEntry, entry_id)
    atoms = (entry.metadata_ or {}).get("atoms")
    if isinstance(atoms, dict):
        return {k: int(v) for k, v in atoms.items()}
    rows = session.execute(
        select(Posting.account_id, Posting.amount).where(
            Posting.entry_id == entry_id, Posting.phase == 0
        )
    ).all()
    by_account: dict[int, int] = {}
    for account_id, amt in rows:
        by_account[account_id] = by_account.get(account_id, 0) + int(amt)
    refunded = by_account.get(prepaid, 0)
    cash_out = -by_account.get(cash, 0)
    excess = cash_out - refunded
    return {
        "amount": refunded + excess,
        "refunded": refunded,
        "excess": excess,
        "bonus_from_lot": by_account.get(bonus, 0),
        "bonus_owed": by_account.get(owed, 0) - excess,
        "withheld": 0,
    }


def undo_refund(
    session: Session,
    topup_id: str,
    refund_entry_id: int,
    *,
    idempotency_key: str,
    reason: str = "",
    effective_at: datetime | None = None,
) -> RefundUndone:
    """Undo one refund of a top-up whose money came back (the refund failed at the provider):
    the exact inverse of what :func:`reverse_topup` booked.

    * the money is back in the cash account it left;
    * the paid credit it took goes back to the top-up's paid lot, the bonus it clawed back to
      the top-up's bonus lot (same expiry; a bonus lot that has expired since gets nothing: the
      bonus would have lapsed);
    * what it booked as owed (``receivable:reversals``: refund beyond the unspent credit, spent
      bonus) is cancelled while that receivable still holds it; what an invoice has billed
      already (the customer owes or paid it there) becomes paid credit instead.

    Idempotent per ``idempotency_key``.

    Raises:
        NotFound: no such top-up.
    """
    topup = _lock_with_account(session, topup_id)
    account = get_account(session, topup.account_id)
    unit = currency_of(account)
    zero = Amount(0, unit)
    prior = session.scalar(
        select(JournalEntry.id).where(JournalEntry.idempotency_key == idempotency_key)
    )
    if prior is not None:
        return RefundUndone(topup_id, zero, zero, zero, zero, None)
    cust = customer_ledger(session, account)
    house = house_ledger(session, book_of(account), unit)
    cash = cash_for_method(house, topup.method)
    owed_acct = reversal_receivable(session, account)
    parts = _parts_of_refund(
        session,
        refund_entry_id,
        prepaid=cust.prepaid.id,
        bonus=cust.bonus.id,
        owed=owed_acct.id,
        cash=cash.id,
    )
    refunded, excess = parts["refunded"], parts["excess"]
    from_lot, owed_bonus, withheld = parts["bonus_from_lot"], parts["bonus_owed"], parts["withheld"]
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
    paid_lot = lots[topup.paid_lot_id]
    bonus_lot = lots.get(topup.bonus_lot_id) if topup.bonus_lot_id else None
    bonus_back = from_lot if bonus_lot is not None and bonus_lot.expired_at is None else 0
    # debts the refund booked, cancelled while receivable:reversals still holds them
    held = _posted_balance(session, owed_acct.id)
    cancel_excess = min(excess, held)
    cancel_bonus = min(owed_bonus, held - cancel_excess)
    extra_paid = (excess - cancel_excess) + (owed_bonus - cancel_bonus)
    cash_back = refunded - withheld + excess
    legs = [
        Leg(cash.id, Amount(cash_back, unit)),
        Leg(house.promotions.id, Amount(withheld + bonus_back + owed_bonus, unit)),
        Leg(cust.prepaid.id, Amount(-(refunded + extra_paid), unit)),
        Leg(cust.bonus.id, Amount(-bonus_back, unit)),
        Leg(owed_acct.id, Amount(-(cancel_excess + cancel_bonus), unit)),
    ]
    entry = post_entry(
        session,
        [leg for leg in legs if leg.amount.atoms],
        description=f"refund of top-up {topup_id} undone: {reason}".strip(": "),
        idempotency_key=idempotency_key,
        effective_at=effective_at,
        metadata={
            "topup_id": topup_id,
            "undoes_entry_id": refund_entry_id,
            "reason": reason,
            "atoms": {
                "cash": cash_back,
                "paid": refunded + extra_paid,
                "bonus": bonus_back,
                "debt_cancelled": cancel_excess + cancel_bonus,
            },
        },
    )
    paid_lot.remaining += refunded
    if extra_paid:
        session.add(
            CreditLot(
                account_id=account.id,
                kind=PAID,
                unit=unit.code,
                ledger_account_id=cust.prepaid.id,
                granted=extra_paid,
                remaining=extra_paid,
                source_type="refund_undone",
                source_id=topup.id,
            )
        )
    if bonus_lot is not None and bonus_back:
        bonus_lot.remaining += bonus_back
    topup.refunded -= refunded + excess
    topup.bonus_clawed_back -= from_lot + owed_bonus
    session.flush()
    return RefundUndone(
        topup_id,
        Amount(cash_back, unit),
        Amount(refunded + extra_paid, unit),
        Amount(bonus_back, unit),
        Amount(cancel_excess + cancel_bonus, unit),
        entry.id,
    )


def _posted_balance(session: Session, ledger_account_id: int) -> int:
    """A tracked asset account's posted balance (debits - credits), read fresh."""
    row = session.execute(
        select(LedgerAccount.debits_posted, LedgerAccount.credits_posted)
        .where(LedgerAccount.id == ledger_account_id)
        .execution_options(populate_existing=True)
    ).one()
    return int(row.debits_posted) - int(row.credits_posted)
