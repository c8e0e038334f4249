"""Card payments: status, refunds by finance, and reconciliation reports."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.datastructures import State
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.idempotency import idempotent_post
from api.paging import keyset
from api.payments import require_gateway
from api.schemas import DecimalString, IdempotencyKey, Limit, Money, Page, scope_of
from invoicing.payments.disputes import payment_disputes
from invoicing.payments.models import Payment
from invoicing.payments.reconcile import stored_reports
from invoicing.payments.refunds import CardRefund, refund_card_payment
from invoicing.payments.settlement import InvoiceRefund
from ledger.amounts import Amount
from ledger.errors import NotFound
from ledger.units import unit as unit_of
from wallet.accounts import Scope, account_rows, get_account
from wallet.models import CreditFreeze

VIEW_ROLES = ("finance", "reseller", "customer")
#: where Stripe's checkout sends the customer back (None: the configured page)
ReturnUrl = Annotated[str | None, Field(max_length=2000)]


class DisputeOut(BaseModel):
    """A dispute on a card payment: the disputed amount, what is frozen, and how it ended."""

    id: str
    amount: Money
    reason: str | None
    provider_status: str
    outcome: str
    frozen_paid: Money
    frozen_bonus: Money
    receivable: Money
    created_at: dt.datetime
    closed_at: dt.datetime | None


class PaymentOut(BaseModel):
    """A card payment.

    ``checkout_url`` is where the customer pays (hosted by Stripe); the wallet is credited (or,
    ``purpose`` ``invoice``, the payment is recorded on the invoice ``purpose_ref``) when Stripe
    confirms the payment (``status`` ``succeeded``). An invoice payment has a ``topup_id`` only when
    it paid more than the invoice owed (the rest became paid credit); its ``fulfilled_ref`` is the
    invoice payment it recorded.
    """

    id: str
    object: str = "payment"
    account_id: str
    purpose: str
    purpose_ref: str | None
    status: str
    amount: Money
    refunded: Money
    topup_id: str | None
    checkout_url: str | None
    checkout_expires_at: dt.datetime | None
    fulfilled_ref: str | None
    fulfillment_error: str | None
    failure_code: str | None
    failure_message: str | None
    disputes: list[DisputeOut]
    created_at: dt.datetime
    succeeded_at: dt.datetime | None


def payment_out(db: Session, p: Payment) -> PaymentOut:
    """Wire form of a payment (with its disputes)."""
    unit = unit_of(p.currency)
    disputes = []
    for d in payment_disputes(db, p.id):
        freeze = db.get(CreditFreeze, d.freeze_id) if d.freeze_id else None
        disputes.append(
            DisputeOut(
                id=d.id,
                amount=Money.of(Amount.of_minor(d.amount_minor, unit)),
                reason=d.reason,
                provider_status=d.provider_status,
                outcome=d.outcome,
                frozen_paid=Money.atoms(freeze.frozen_paid if freeze else 0, unit),
                frozen_bonus=Money.atoms(freeze.frozen_bonus if freeze else 0, unit),
                receivable=Money.atoms(d.receivable, unit),
                created_at=d.created_at,
                closed_at=d.closed_at,
            )
        )
    return PaymentOut(
        id=p.id,
        account_id=p.account_id,
        purpose=p.purpose,
        purpose_ref=p.purpose_ref,
        status=p.status,
        amount=Money.atoms(p.amount, unit),
        refunded=Money.of(Amount.of_minor(p.refunded_minor, unit)),
        topup_id=p.topup_id,
        checkout_url=p.checkout_url if p.status == "pending" else None,
        checkout_expires_at=p.checkout_expires_at,
        fulfilled_ref=p.fulfilled_ref,
        fulfillment_error=p.fulfillment_error,
        failure_code=p.failure_code,
        failure_message=p.failure_message,
        disputes=disputes,
        created_at=p.created_at,
        succeeded_at=p.succeeded_at,
    )


def visible_payment(db: Session, payment_id: str, scope: Scope) -> Payment:
    """A payment the caller may see (others are 404)."""
    p = db.get(Payment, payment_id)
    if p is None:
        raise NotFound(f"payment {payment_id} does not exist")
    get_account(db, p.account_id, scope=scope)
    return p


class CardRefundIn(BaseModel):
    """A refund of a card payment's unspent paid credit; without ``amount``, all of it."""

    model_config = ConfigDict(extra="forbid")
    amount: DecimalString | None = None
    reason: str = Field(default="", max_length=500)


class CardRefundOut(BaseModel):
    """A refund made at Stripe and what it reversed in the wallet.

    And, for an invoice payment, ``reopened``: owed on the invoice again.
    """

    topup_id: str | None
    payment_id: str
    provider_refund_id: str
    refunded: Money
    bonus_clawed_back: Money
    receivable: Money
    reopened: Money
    entry_id: int | None


def card_refund_out(r: CardRefund) -> CardRefundOut:
    """Wire form of a card refund."""
    unit = unit_of(r.payment.currency)
    zero = Amount(0, unit)
    applied = r.applied
    return CardRefundOut(
        topup_id=r.payment.topup_id,
        payment_id=r.payment.id,
        provider_refund_id=r.provider_refund_id,
        refunded=Money.of(applied.refunded if applied else zero),
        bonus_clawed_back=Money.of(applied.bonus_clawed_back if applied else zero),
        receivable=Money.of((applied.receivable or zero) if applied else zero),
        reopened=Money.of(applied.reopened if isinstance(applied, InvoiceRefund) else zero),
        entry_id=applied.entry_id if applied else None,
    )


def card_refund(
    request: Request[Principal, Principal, State],
    db: Session,
    principal: Principal,
    payment_id: str,
    data: CardRefundIn,
    idempotency_key: str | None,
) -> CardRefundOut:
    """Refund a card payment through Stripe under the request's idempotency key.

    Args:
        request: the request (its app's payment gateway).
        db: the request's session.
        principal: the caller.
        payment_id: the card payment to refund.
        data: the refund asked.
        idempotency_key: the request's key, also Stripe's.
    """
    refund = refund_card_payment(
        db,
        require_gateway(request.app.state.payments),
        payment_id,
        amount=data.amount,
        reason=data.reason,
        request_key=idempotency_key,
        scope=scope_of(principal),
    )
    return card_refund_out(refund)


def require_card_payments(request: Request[Principal, Principal, State]) -> None:
    """Refuse a card operation before its key is looked at when Stripe is not configured.

    Args:
        request: the request (its app's payment gateway).

    Raises:
        PaymentsNotConfigured: this deployment has no Stripe keys.
    """
    require_gateway(request.app.state.payments)


class PaymentsController(Controller):
    """``/v1/payments``: card payments (each key sees the payments of its accounts)."""

    path = "/v1/payments"
    tags = ["payments"]

    @get("/", sync_to_thread=True, guards=[requires(*VIEW_ROLES)])
    def list_payments(
        self,
        db: Session,
        principal: Principal,
        account_id: str,
        limit: Limit = 20,
        starting_after: str | None = None,
    ) -> Page[PaymentOut]:
        """An account's card payments, oldest first."""
        get_account(db, account_id, scope=scope_of(principal))
        stmt = account_rows(Payment, account_id)
        rows = db.scalars(keyset(stmt, Payment.id, starting_after, limit)).all()
        return Page[PaymentOut].of(rows, limit, lambda p: payment_out(db, p))

    @get("/{payment_id:str}", sync_to_thread=True, guards=[requires(*VIEW_ROLES)])
    def get_payment(self, payment_id: str, db: Session, principal: Principal) -> PaymentOut:
        """One card payment with its disputes."""
        return payment_out(db, visible_payment(db, payment_id, scope_of(principal)))

    @idempotent_post(
        "/{payment_id:str}/refunds", guards=[requires("finance")], check=require_card_payments
    )
    def refund(
        self,
        payment_id: str,
        request: Request[Principal, Principal, State],
        data: CardRefundIn,
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> CardRefundOut:
        """Refund unspent paid credit of a card payment through Stripe.

        At most the unspent credit: a larger refund is refused before Stripe is called.
        """
        return card_refund(request, db, principal, payment_id, data, idempotency_key)


class ReconciliationOut(BaseModel):
    """One day of Stripe balance transactions against ``cash:stripe``, in one currency."""

    day: dt.date
    currency: str
    provider_net: Money
    provider_fees: Money
    ledger_net: Money
    difference: Money
    balanced: bool
    transactions: int
    details: dict[str, Any]
    run_count: int
    updated_at: dt.datetime


class ReconciliationsController(Controller):
    """``/v1/payment-reconciliations``: stored daily reports (finance)."""

    path = "/v1/payment-reconciliations"
    tags = ["payments"]

    @get("/", sync_to_thread=True, guards=[requires("finance")])
    def list_reports(
        self, db: Session, day: dt.date | None = None, limit: Limit = 31
    ) -> list[ReconciliationOut]:
        """Reports, newest day first (or one day's, per currency)."""
        out = []
        for r in stored_reports(db, day=day, limit=limit):
            unit = unit_of(r.currency)
            out.append(
                ReconciliationOut(
                    day=r.day,
                    currency=r.currency,
                    provider_net=Money.atoms(r.provider_net, unit),
                    provider_fees=Money.atoms(r.provider_fees, unit),
                    ledger_net=Money.atoms(r.ledger_net, unit),
                    difference=Money.atoms(r.difference, unit),
                    balanced=r.difference == 0,
                    transactions=r.transactions,
                    details=r.details,
                    run_count=r.run_count,
                    updated_at=r.updated_at,
                )
            )
        return out
