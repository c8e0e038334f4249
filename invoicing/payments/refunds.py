"""Refunds of card payments initiated by finance through our API.

The rule: finance may refund at most the top-up's unspent paid credit (for an invoice payment:
what it recorded on the invoice, which is then owed again, plus any unspent paid credit it left
in the wallet). The check is made before
calling the provider, so a refund that is too large is refused and nothing reaches the provider.
The provider call carries an idempotency key derived from the request, and its answer includes
the charge's cumulative refunded amount; the wallet is brought up to that total exactly as for a
``charge.refunded`` webhook (so the webhook that follows, or a retried request, applies nothing
twice). Usage landing between the check and the provider's answer can leave part of the refund
uncovered by unspent credit: that part is then booked as owed by the customer.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from invoicing.payments.gateway import PaymentGateway, ProviderRefund
from invoicing.payments.models import Payment
from invoicing.payments.refund_failures import record_refund
from invoicing.payments.rules import refund_amount
from invoicing.payments.settlement import (
    InvoiceRefund,
    apply_refunded_total,
    refundable_of_invoice_payment,
)
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.errors import NotFound
from ledger.units import unit as unit_of
from wallet.accounts import EVERYTHING, Scope, get_account
from wallet.errors import InvalidRequest
from wallet.models import Account
from wallet.refunds import Refund, unspent_paid
from wallet.topups import parse_money


@dataclass(frozen=True, slots=True)
class CardRefund:
    """A refund made at the provider and what it did to the wallet.

    None: already applied, e.g. by the provider's webhook after an earlier attempt of the same
    request.
    """

    payment: Payment
    provider_refund_id: str
    amount: Amount
    applied: Refund | InvoiceRefund | None


def payment_for_topup(session: Session, topup_id: str, *, lock: bool = False) -> Payment | None:
    """The card payment whose money a top-up holds, if it was paid by card."""
    stmt = select(Payment).where(Payment.topup_id == topup_id)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def refund_card_payment(
    session: Session,
    gateway: PaymentGateway,
    payment_id: str,
    *,
    amount: str | None = None,
    reason: str = "",
    request_key: str | None = None,
    scope: Scope = EVERYTHING,
) -> CardRefund:
    """Refund ``amount`` (default: all the unspent paid credit) of a card payment.

    Args:
        session: the caller's transaction.
        gateway: the payment provider.
        payment_id: the card payment to refund.
        amount: a decimal string in the payment's currency; default all the unspent paid credit.
        reason: why, kept on the refund.
        scope: the accounts the caller may see (others are not found).
        request_key: the caller's idempotency key; the same key makes the provider return the
            same refund instead of making a second one.

    Raises:
        NotFound: no such payment visible to the caller.
        InvalidRequest: the payment has not succeeded.
        RefundTooLarge: more than the unspent paid credit (checked before calling the provider).
        PaymentProviderError: the provider refused or could not be reached (nothing changed).
    """
    payment, account = _lock_refundable(session, payment_id, scope)
    refundable, why = _refundable(session, payment)
    wanted = parse_money(amount, account, what="refund amount") if amount else None
    minor = refund_amount(wanted, refundable, why).minor_units()
    key = request_key or uuid.uuid4().hex
    assert payment.payment_intent_id is not None  # checked by _lock_refundable
    provider_refund = gateway.refund(
        payment_intent_id=payment.payment_intent_id,
        amount_minor=minor,
        idempotency_key=f"tokenwallet-refund-{payment.id}-{key}"[:255],
        metadata=_refund_metadata(payment, reason),
    )
    return _book_refund(session, payment, provider_refund, minor, reason)


def _book_refund(
    session: Session, payment: Payment, provider_refund: ProviderRefund, minor: int, reason: str
) -> CardRefund:
    """Bring our books up to the refunded total the provider answered, and keep the refund.

    Args:
        session: the caller's transaction (the payment row is locked).
        payment: the card payment refunded.
        provider_refund: the provider's answer.
        minor: the minor units asked for (the total when the answer does not carry it).
        reason: finance's reason.
    """
    total = provider_refund.charge_amount_refunded_minor
    if total is None:
        total = payment.refunded_minor + minor
    now = utcnow()
    applied = apply_refunded_total(
        session,
        payment,
        total,
        at=now,
        reason=f"refund {provider_refund.id} by finance: {reason}".strip(": "),
    )
    # known by id, so its failure (a later webhook) can be told from a stale snapshot
    refund = {"id": provider_refund.id, "amount": provider_refund.amount_minor}
    record_refund(
        session,
        payment,
        {**refund, "status": provider_refund.status, "created": int(now.timestamp())},
    )
    return CardRefund(
        payment,
        provider_refund.id,
        Amount.of_minor(provider_refund.amount_minor, unit_of(payment.currency)),
        applied,
    )


def _lock_refundable(session: Session, payment_id: str, scope: Scope) -> tuple[Payment, Account]:
    """The payment, locked, and its account (visible to ``scope``).

    Raises:
        NotFound: no such payment visible to the caller.
        InvalidRequest: the payment has not succeeded.
    """
    payment = session.scalars(
        select(Payment).where(Payment.id == payment_id).with_for_update()
    ).one_or_none()
    if payment is None:
        raise NotFound(f"payment {payment_id} does not exist")
    account = get_account(session, payment.account_id, scope=scope)
    if payment.status != "succeeded" or not payment.payment_intent_id:
        raise InvalidRequest(
            f"payment {payment_id} is {payment.status}: there is nothing to refund"
        )
    return payment, account


def _refundable(session: Session, payment: Payment) -> tuple[Amount, str]:
    """What finance may refund of the payment, and why that much (for the refusal)."""
    if payment.purpose == "invoice":
        credit, on_invoice = refundable_of_invoice_payment(session, payment)
        unspent = credit + on_invoice
        return unspent, (
            f"payment {payment.id} can give back {unspent}: {on_invoice} recorded on invoice"
            f" {payment.purpose_ref} (owed again once refunded) and {credit} of unspent paid"
            " credit"
        )
    assert payment.topup_id is not None
    unspent = unspent_paid(session, payment.topup_id)
    return unspent, f"payment {payment.id} has {unspent} of unspent paid credit"


def _refund_metadata(payment: Payment, reason: str) -> dict[str, str]:
    """The provider refund's metadata: our payment, the reason, the top-up or invoice."""
    metadata = {"tw_payment_id": payment.id, "tw_reason": reason[:450]}
    if payment.topup_id:
        metadata["tw_topup_id"] = payment.topup_id
    if payment.purpose == "invoice" and payment.purpose_ref:
        metadata["tw_invoice_id"] = payment.purpose_ref
    return metadata
