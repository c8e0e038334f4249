"""Token packages bought and coding-plan subscriptions.

With wallet credit or by card; their lists and cancellation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.params import QueryParameter
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.deps import now_of
from api.idempotency import Reply, idempotent_post
from api.openapi import CARD_STARTED, returns
from api.paging import keyset
from api.payments import checkout_urls, require_gateway
from api.routes.payments import PaymentOut as CardPaymentOut
from api.routes.payments import ReturnUrl, payment_out
from api.schemas import IdempotencyKey, Limit, Money, Page, scope_of
from api.timefilters import aware
from invoicing.payments.checkout import start_card_payment
from wallet.accounts import account_rows, get_account, require_open
from wallet.ledger_accounts import currency_of
from wallet.models import CreditLot, Subscription
from wallet.packages import buy_package
from wallet.subscriptions import cancel_subscription, start_subscription


class PackagePurchaseIn(BaseModel):
    """A package to buy with wallet credit, or (``method: stripe``) by card.

    The answer is then a pending payment (202) whose ``checkout_url`` is Stripe's payment page; the
    package is bought when Stripe confirms the payment.
    """

    model_config = ConfigDict(extra="forbid")
    package_id: str
    method: Literal["wallet", "stripe"] = "wallet"
    success_url: ReturnUrl = None
    cancel_url: ReturnUrl = None


class PackagePurchaseOut(BaseModel):
    """A package purchase and the token lot it granted."""

    id: str
    account_id: str
    package_id: str
    price: Money
    tokens: int
    lot_id: int
    expires_at: datetime | None
    created_at: datetime


class SubscriptionIn(BaseModel):
    """A plan to subscribe to.

    The first month is paid from the wallet or (``method: stripe``) by card, answered with a pending
    payment (202) like a card package purchase.
    """

    model_config = ConfigDict(extra="forbid")
    plan_id: str
    method: Literal["wallet", "stripe"] = "wallet"
    success_url: ReturnUrl = None
    cancel_url: ReturnUrl = None


class SubscriptionOut(BaseModel):
    """A subscription."""

    id: str
    account_id: str
    plan_id: str
    status: str
    current_period_start: datetime
    current_period_end: datetime
    cancel_at_period_end: bool


def subscription_out(s: Subscription) -> SubscriptionOut:
    """Wire form of a subscription."""
    return SubscriptionOut(
        id=s.id,
        account_id=s.account_id,
        plan_id=s.plan_id,
        status=s.status,
        current_period_start=s.current_period_start,
        current_period_end=s.current_period_end,
        cancel_at_period_end=s.cancel_at_period_end,
    )


def _check_purchase(
    request: Request[Principal, Principal, State],
    db: Session,
    account_id: str,
    data: PackagePurchaseIn | SubscriptionIn,
    principal: Principal,
) -> None:
    """Refuse a purchase before its key is looked at (a replay is refused again).

    Args:
        request: the request (its app's payment gateway).
        db: the request's session.
        account_id: the buying account.
        data: the purchase.
        principal: the caller.

    Raises:
        AccountClosed: the account is closed.
        PaymentsNotConfigured: a card purchase in a deployment without Stripe keys.
    """
    require_open(db, account_id, scope=scope_of(principal))
    if data.method == "stripe":
        require_gateway(request.app.state.payments)


class AccountPurchasesController(Controller):
    """``/v1/accounts/{id}/package-purchases`` and ``/subscriptions``: buy and list."""

    path = "/v1/accounts"
    tags = ["accounts"]

    @get(
        "/{account_id:str}/subscriptions",
        sync_to_thread=True,
        guards=[requires("finance", "reseller", "customer")],
    )
    def list_subscriptions(
        self,
        account_id: str,
        db: Session,
        principal: Principal,
        from_: Annotated[datetime | None, QueryParameter(name="from")] = None,
        to: datetime | None = None,
        status: Literal["active", "past_due", "canceled"] | None = None,
        plan_id: str | None = None,
        limit: Limit = 20,
        starting_after: str | None = None,
    ) -> Page[SubscriptionOut]:
        """The account's subscriptions, oldest first, filtered by creation time, status and plan.

        Live and ended. ``from`` inclusive, ``to`` exclusive, with offset.
        """
        account = get_account(db, account_id, scope=scope_of(principal))
        stmt = account_rows(
            Subscription,
            account.id,
            created_from=aware("from", from_),
            created_to=aware("to", to),
            status=status,
            plan_id=plan_id,
        )
        rows = db.scalars(keyset(stmt, Subscription.id, starting_after, limit)).all()
        return Page[SubscriptionOut].of(rows, limit, subscription_out)

    @idempotent_post(
        "/{account_id:str}/package-purchases",
        guards=[requires("finance", "reseller", "customer")],
        responses={
            **returns(PackagePurchaseOut, 201),
            **returns(CardPaymentOut, 202, CARD_STARTED),
        },
        check=_check_purchase,
        opt={"problems": (402,)},
    )
    def package_purchase(
        self,
        account_id: str,
        request: Request[Principal, Principal, State],
        data: PackagePurchaseIn,
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> PackagePurchaseOut | Reply:
        """Buy a token package with wallet credit (or start paying for it by card)."""
        if data.method == "stripe":
            return _card_purchase(
                request, db, principal, account_id, data, idempotency_key, "package"
            )
        p = buy_package(
            db,
            account_id,
            data.package_id,
            at=now_of(request.app.state),
            scope=scope_of(principal),
        )
        account = get_account(db, account_id)
        lot = db.get_one(CreditLot, p.lot_id)
        return PackagePurchaseOut(
            id=p.id,
            account_id=p.account_id,
            package_id=p.package_id,
            price=Money.atoms(p.price, currency_of(account)),
            tokens=p.tokens,
            lot_id=p.lot_id,
            expires_at=lot.expires_at,
            created_at=p.created_at,
        )

    @idempotent_post(
        "/{account_id:str}/subscriptions",
        guards=[requires("finance", "reseller", "customer")],
        responses={**returns(SubscriptionOut, 201), **returns(CardPaymentOut, 202, CARD_STARTED)},
        check=_check_purchase,
        opt={"problems": (402,)},
    )
    def subscribe(
        self,
        account_id: str,
        request: Request[Principal, Principal, State],
        data: SubscriptionIn,
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> SubscriptionOut | Reply:
        """Start a coding-plan subscription.

        The first month's fee is paid from the wallet (or by card: the subscription starts when
        Stripe confirms the payment).
        """
        if data.method == "stripe":
            return _card_purchase(request, db, principal, account_id, data, idempotency_key, "plan")
        sub = start_subscription(
            db, account_id, data.plan_id, at=now_of(request.app.state), scope=scope_of(principal)
        )
        return subscription_out(sub)


class SubscriptionsController(Controller):
    """``/v1/subscriptions``: cancellation at period end."""

    path = "/v1/subscriptions"
    tags = ["accounts"]

    @idempotent_post(
        "/{subscription_id:str}/cancel",
        status_code=200,
        guards=[requires("finance", "reseller", "customer")],
    )
    def cancel(
        self,
        request: Request[Any, Any, Any],
        subscription_id: str,
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> SubscriptionOut:
        """Cancel at the end of the current period (repeat-safe)."""
        sub = cancel_subscription(db, subscription_id, scope=scope_of(principal))
        return subscription_out(sub)


def _card_purchase(
    request: Request[Principal, Principal, State],
    db: Session,
    principal: Principal,
    account_id: str,
    data: PackagePurchaseIn | SubscriptionIn,
    idempotency_key: str | None,
    purpose: Literal["package", "plan"],
) -> Reply:
    """Start paying for a package or a plan by card: a pending payment (202)."""
    started = start_card_payment(
        db,
        require_gateway(request.app.state.payments),
        account_id,
        purpose=purpose,
        urls=checkout_urls(request.app.state.settings, data.success_url, data.cancel_url),
        package_id=data.package_id if isinstance(data, PackagePurchaseIn) else None,
        plan_id=data.plan_id if isinstance(data, SubscriptionIn) else None,
        idempotency_key=idempotency_key,
        scope=scope_of(principal),
    )
    return Reply(payment_out(db, started.payment), 202)
