"""Top-ups: recorded by bank transfer or a reseller, or paid by card; their lists and refunds."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.exceptions import PermissionDeniedException
from litestar.params import QueryParameter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.deps import now_of
from api.idempotency import idempotent_post
from api.openapi import returns
from api.paging import keyset
from api.payments import checkout_urls, require_gateway
from api.routes.payments import CardRefundIn, CardRefundOut, ReturnUrl, card_refund
from api.schemas import (
    POSITIVE_DECIMAL,
    DecimalString,
    IdempotencyKey,
    Limit,
    Money,
    Page,
    scope_of,
)
from api.timefilters import aware
from invoicing.payments.checkout import start_card_payment
from invoicing.payments.refunds import payment_for_topup
from wallet.accounts import account_rows, get_account, require_open
from wallet.ledger_accounts import currency_of
from wallet.models import Account, Topup
from wallet.refunds import refund_topup
from wallet.topups import PaidExpiryNotAllowed, record_topup


class TopupIn(BaseModel):
    """Money received for an account, or (``stripe``) a card top-up to start.

    The response's ``checkout_url`` is Stripe's hosted payment page; the wallet is credited when
    Stripe confirms the payment. ``success_url``/``cancel_url`` override the configured return
    pages.
    """

    model_config = ConfigDict(extra="forbid")
    amount: DecimalString = Field(json_schema_extra=POSITIVE_DECIMAL)
    method: Literal["bank_transfer", "stripe", "reseller"]
    reference: str | None = Field(default=None, max_length=200)
    paid_expires_in_days: int | None = Field(
        default=None,
        ge=1,
        le=3650,
        description="the paid credit expires after this many days (only where the operator's"
        " terms allow it: TOKENWALLET_PAID_CREDIT_EXPIRY_ALLOWED; refused otherwise)",
    )
    success_url: ReturnUrl = None
    cancel_url: ReturnUrl = None


class TopupOut(BaseModel):
    """A top-up: the paid amount, the bonus it earned, and their total."""

    id: str
    account_id: str
    status: str
    method: str
    amount: Money
    bonus: Money
    credited_total: Money
    refunded: Money
    reference: str | None
    created_at: datetime
    payment_id: str | None = None
    checkout_url: str | None = None


def topup_out(t: Topup, account: Account, *, payment: Any = None) -> TopupOut:
    """Wire form of a top-up (a pending card top-up has credited nothing yet)."""
    unit = currency_of(account)
    credited = t.amount + t.bonus if t.status == "succeeded" else 0
    return TopupOut(
        id=t.id,
        account_id=t.account_id,
        status=t.status,
        method=t.method,
        amount=Money.atoms(t.amount, unit),
        bonus=Money.atoms(t.bonus, unit),
        credited_total=Money.atoms(credited, unit),
        refunded=Money.atoms(t.refunded, unit),
        reference=t.reference,
        created_at=t.created_at,
        payment_id=payment.id if payment is not None else None,
        checkout_url=payment.checkout_url
        if payment is not None and payment.status == "pending"
        else None,
    )


def _check_topup(
    request: Request[Principal, Principal, State],
    db: Session,
    account_id: str,
    data: TopupIn,
    principal: Principal,
) -> None:
    """Refuse a top-up before its key is looked at (a replay is refused again).

    Args:
        request: the request (its app's payment gateway).
        db: the request's session.
        account_id: the account to top up.
        data: the top-up.
        principal: the caller.

    Raises:
        PermissionDeniedException: the role may not record this method (403).
        PaidExpiryNotAllowed: a card top-up with ``paid_expires_in_days``.
        PaymentsNotConfigured: a card top-up in a deployment without Stripe keys.
    """
    allowed = {
        "bank_transfer": ("admin", "finance"),
        "reseller": ("admin", "reseller"),
        "stripe": ("admin", "finance", "reseller", "customer"),
    }[data.method]
    if principal.role not in allowed:
        raise PermissionDeniedException(
            f"a {principal.role} key may not record {data.method} top-ups"
            f" (allowed: {', '.join(allowed)})"
        )
    if data.method == "stripe" and data.paid_expires_in_days is not None:
        raise PaidExpiryNotAllowed(
            "card top-ups cannot carry an expiry; give paid credit an expiry on bank"
            " transfers, where the operator's terms allow it"
        )
    require_open(db, account_id, scope=scope_of(principal))
    if data.method == "stripe":
        require_gateway(request.app.state.payments)


def _card_topup(
    request: Request[Principal, Principal, State],
    db: Session,
    principal: Principal,
    account_id: str,
    data: TopupIn,
    idempotency_key: str | None,
) -> TopupOut:
    """Start a card top-up: a pending top-up and its checkout (201)."""
    started = start_card_payment(
        db,
        require_gateway(request.app.state.payments),
        account_id,
        purpose="topup",
        urls=checkout_urls(request.app.state.settings, data.success_url, data.cancel_url),
        amount=data.amount,
        idempotency_key=idempotency_key,
        scope=scope_of(principal),
    )
    topup = db.get_one(Topup, started.payment.topup_id)
    return topup_out(topup, get_account(db, account_id), payment=started.payment)


class AccountTopupsController(Controller):
    """``/v1/accounts/{id}/topups``: record money received and list it."""

    path = "/v1/accounts"
    tags = ["accounts"]

    @idempotent_post(
        "/{account_id:str}/topups",
        guards=[requires("finance", "reseller", "customer")],
        check=_check_topup,
        opt={"problems": (402,)},  # a reseller top-up draws the reseller's float
    )
    def topup(
        self,
        account_id: str,
        request: Request[Principal, Principal, State],
        data: TopupIn,
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> TopupOut:
        """Record money received.

        ``bank_transfer`` (finance), ``reseller`` (a reseller on its sub-accounts), or ``stripe``
        (card checkout).
        """
        if data.method == "stripe":
            return _card_topup(request, db, principal, account_id, data, idempotency_key)
        result = record_topup(
            db,
            account_id,
            amount=data.amount,
            method=data.method,
            reference=data.reference,
            idempotency_key=idempotency_key,
            at=now_of(request.app.state),
            scope=scope_of(principal),
            paid_expires_in_days=data.paid_expires_in_days,
            paid_expiry_allowed=request.app.state.settings.tokenwallet_paid_credit_expiry_allowed,
        )
        return topup_out(result.topup, get_account(db, account_id))

    @get(
        "/{account_id:str}/topups",
        sync_to_thread=True,
        guards=[requires("finance", "reseller", "customer")],
    )
    def list_topups(
        self,
        account_id: str,
        db: Session,
        principal: Principal,
        from_: Annotated[datetime | None, QueryParameter(name="from")] = None,
        to: datetime | None = None,
        status: Literal["pending", "succeeded", "failed"] | None = None,
        method: Literal["bank_transfer", "stripe", "reseller"] | None = None,
        limit: Limit = 20,
        starting_after: str | None = None,
    ) -> Page[TopupOut]:
        """The account's top-ups, oldest first, filtered by creation time, status and method.

        ``from`` inclusive, ``to`` exclusive, with offset.
        """
        account = get_account(db, account_id, scope=scope_of(principal))
        stmt = account_rows(
            Topup,
            account.id,
            created_from=aware("from", from_),
            created_to=aware("to", to),
            status=status,
            method=method,
        )
        rows = db.scalars(keyset(stmt, Topup.id, starting_after, limit)).all()
        return Page[TopupOut].of(rows, limit, lambda t: topup_out(t, account))


class RefundIn(BaseModel):
    """A refund of unspent paid credit; without ``amount``, all of it."""

    model_config = ConfigDict(extra="forbid")
    amount: DecimalString | None = Field(default=None, json_schema_extra=POSITIVE_DECIMAL)
    reason: str = Field(default="", max_length=500)


class RefundOut(BaseModel):
    """What was refunded, how much bonus was taken back with it, and what to pay out.

    The refunded credit minus the spent bonus that goes with it (``withheld``).
    """

    topup_id: str
    refunded: Money
    bonus_clawed_back: Money
    withheld: Money
    payout: Money
    entry_id: int


def _check_refund(
    request: Request[Principal, Principal, State], db: Session, topup_id: str
) -> None:
    """Refuse refunding a card top-up in a deployment without Stripe keys.

    Args:
        request: the request (its app's payment gateway).
        db: the request's session.
        topup_id: the top-up to refund.

    Raises:
        PaymentsNotConfigured: the top-up was paid by card and Stripe is not configured.
    """
    if payment_for_topup(db, topup_id) is not None:
        require_gateway(request.app.state.payments)


class TopupsController(Controller):
    """``/v1/topups``: refunds (finance)."""

    path = "/v1/topups"
    tags = ["accounts"]

    @idempotent_post(
        "/{topup_id:str}/refunds",
        guards=[requires("finance")],
        responses=returns(RefundOut, 201),
        check=_check_refund,
    )
    def refund(
        self,
        topup_id: str,
        request: Request[Principal, Principal, State],
        data: RefundIn,
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> RefundOut | CardRefundOut:
        """Refund unspent paid credit of a top-up.

        The bonus that came with that money is taken back (unspent bonus first, spent bonus withheld
        from the payout). A top-up paid by card is refunded through Stripe (see
        ``/v1/payments/{id}/refunds``).
        """
        card = payment_for_topup(db, topup_id)
        if card is not None:
            asked = CardRefundIn(amount=data.amount, reason=data.reason)
            return card_refund(request, db, principal, card.id, asked, idempotency_key)
        r = refund_topup(
            db, topup_id, amount=data.amount, reason=data.reason, scope=scope_of(principal)
        )
        withheld = r.withheld or r.refunded - r.refunded
        return RefundOut(
            topup_id=r.topup_id,
            refunded=Money.of(r.refunded),
            bonus_clawed_back=Money.of(r.bonus_clawed_back),
            withheld=Money.of(withheld),
            payout=Money.of(r.refunded - withheld),
            entry_id=r.entry_id,
        )
