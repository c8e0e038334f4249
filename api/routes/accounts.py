"""Accounts and money: accounts, balances, top-ups, refunds, packages, subscriptions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import PermissionDeniedException
from litestar.params import QueryParameter
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.audit import record_request
from api.auth import Principal, requires
from api.deps import now_of
from api.idempotency import idempotent_patch, idempotent_post, run_idempotent
from api.openapi import CARD_STARTED, returns
from api.paging import keyset
from api.payments import checkout_urls, require_gateway
from api.routes.invoices import BillingIn, BillingOut, billing_out
from api.routes.payments import CardRefundIn, payment_out, run_card_refund
from api.routes.payments import PaymentOut as CardPaymentOut
from api.schemas import (
    PCT_PATTERN,
    POSITIVE_DECIMAL,
    DecimalString,
    IdempotencyKey,
    Limit,
    Money,
    NonNegativeDecimalString,
    Page,
    scope_of,
)
from api.timefilters import aware
from invoicing.payments.checkout import start_card_payment
from invoicing.payments.refunds import payment_for_topup
from invoicing.profiles import get_billing_profile, set_billing_profile
from ledger.amounts import Amount
from wallet.accounts import create_account, get_account, require_open, update_account
from wallet.balance import balance_of
from wallet.chart import currency_of
from wallet.models import Account, Subscription, Topup
from wallet.packages import buy_package
from wallet.subscriptions import cancel_subscription, start_subscription
from wallet.topups import PaidExpiryNotAllowed, record_topup, refund_topup

ALL_ROLES = ("finance", "reseller", "customer", "gateway")


class Discount(BaseModel):
    """A per-model (or, without model, all-model) discount in percent."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    pct: DecimalString = Field(json_schema_extra={"pattern": PCT_PATTERN})


class AccountIn(BaseModel):
    """A new account."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    kind: Literal["customer", "reseller"] = "customer"
    parent_id: str | None = None
    external_id: str | None = Field(default=None, max_length=200)
    credit_limit: NonNegativeDecimalString = "0"
    failed_request_policy: str | None = None
    discounts: list[Discount] = []
    burn_order: list[Literal["plan", "package", "bonus", "paid", "overage"]] | None = None
    low_balance_threshold: DecimalString | None = None
    billing: BillingIn | None = None


BurnSource = Literal["plan", "package", "bonus", "paid", "overage"]

#: fields of a PATCH that may be null: null puts the default back
_NULLABLE = ("failed_request_policy", "burn_order", "low_balance_threshold")


class AccountPatch(BaseModel):
    """What can change on an account; only the fields sent change. ``null`` puts the default
    back for ``failed_request_policy`` (the built-in policy), ``burn_order`` (the default order)
    and ``low_balance_threshold`` (no alert). ``status``: ``suspended`` refuses the account's
    usage and new authorizations (reversible); ``closed`` is final and refused (409
    ``account_not_empty``) while credit, tokens, debts, open authorizations, a live subscription
    or open sub-accounts remain. ``reason`` is kept in the audit log with the change."""

    model_config = ConfigDict(extra="forbid")
    # omitted is "unchanged"; null is not a value of these (the document says so)
    name: str | SkipJsonSchema[None] = Field(default=None, min_length=1, max_length=200)
    credit_limit: NonNegativeDecimalString | SkipJsonSchema[None] = None
    failed_request_policy: str | None = Field(default=None, min_length=1, max_length=128)
    discounts: list[Discount] | SkipJsonSchema[None] = Field(default=None, max_length=1000)
    burn_order: list[BurnSource] | None = None
    low_balance_threshold: NonNegativeDecimalString | None = None
    status: Literal["active", "suspended", "closed"] | SkipJsonSchema[None] = None
    billing: BillingIn | SkipJsonSchema[None] = None
    reason: str | SkipJsonSchema[None] = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _something_to_change(self) -> AccountPatch:
        sent = self.model_fields_set - {"reason"}
        if not sent:
            raise ValueError("send at least one field to change")
        for field in sent - set(_NULLABLE):
            if getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        """The account fields sent, keyed as the service names them (billing apart)."""
        out = {f: getattr(self, f) for f in self.model_fields_set - {"billing", "reason"}}
        if "failed_request_policy" in out:
            out["failed_request_policy_id"] = out.pop("failed_request_policy")
        if out.get("discounts") is not None:
            out["discounts"] = [d.model_dump() for d in out["discounts"]]
        return out


class AccountOut(BaseModel):
    """An account."""

    id: str
    name: str
    kind: str
    parent_id: str | None
    external_id: str | None
    currency: str
    credit_limit: Money
    failed_request_policy: str | None
    discounts: list[Discount]
    burn_order: list[str] | None
    low_balance_threshold: Money | None
    status: Literal["active", "suspended", "closed"]
    created_at: datetime
    billing: BillingOut | None = None


def with_billing(db: Session, out: AccountOut) -> AccountOut:
    """Add the account's billing terms (net terms, tax profile, bill-to details)."""
    out.billing = billing_out(get_billing_profile(db, out.id))
    return out


def account_out(a: Account) -> AccountOut:
    """Wire form of an account."""
    unit = currency_of(a)
    return AccountOut(
        id=a.id,
        name=a.name,
        kind=a.kind,
        parent_id=a.parent_id,
        external_id=a.external_id,
        currency=a.currency,
        credit_limit=Money.of(Amount(a.credit_limit, unit)),
        failed_request_policy=a.failed_request_policy_id,
        discounts=[Discount(model=d.get("model"), pct=str(d["pct"])) for d in a.discounts],
        burn_order=a.burn_order,
        low_balance_threshold=Money.of(Amount(a.low_balance_threshold, unit))
        if a.low_balance_threshold is not None
        else None,
        status=a.status,
        created_at=a.created_at,
    )


class PackageOut(BaseModel):
    """A package lot with tokens left."""

    id: int
    models: list[str]
    tokens_remaining: int
    expires_at: datetime | None


class WindowOut(BaseModel):
    """A quota window: ``used`` of ``limit`` until ``resets_at`` (null: no window open)."""

    kind: str
    unit: str
    limit: int
    used: int
    resets_at: datetime | None


class SubscriptionBalance(BaseModel):
    """The live subscription in a balance."""

    id: str
    plan_id: str
    status: str
    current_period_end: datetime
    cancel_at_period_end: bool
    windows: list[WindowOut]


class BalanceOut(BaseModel):
    """``available``: money the account can spend now (paid + bonus - held + unused credit
    limit). Token entitlements are listed apart."""

    currency: str
    available: str
    paid: str
    bonus: str
    held: str
    overage_unbilled: str
    invoiced_outstanding: str
    credit_limit: str
    reversals_owed: str = Field(
        default="0", description="owed after refunds and disputes; billed on the next invoice"
    )
    packages: list[PackageOut]
    subscription: SubscriptionBalance | None


class TopupIn(BaseModel):
    """Money received for an account, or (``stripe``) a card top-up to start: the response's
    ``checkout_url`` is Stripe's hosted payment page; the wallet is credited when Stripe
    confirms the payment. ``success_url``/``cancel_url`` override the configured return pages."""

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
    success_url: str | None = Field(default=None, max_length=2000)
    cancel_url: str | None = Field(default=None, max_length=2000)


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
        amount=Money.of(Amount(t.amount, unit)),
        bonus=Money.of(Amount(t.bonus, unit)),
        credited_total=Money.of(Amount(credited, unit)),
        refunded=Money.of(Amount(t.refunded, unit)),
        reference=t.reference,
        created_at=t.created_at,
        payment_id=payment.id if payment is not None else None,
        checkout_url=payment.checkout_url
        if payment is not None and payment.status == "pending"
        else None,
    )


class PackagePurchaseIn(BaseModel):
    """A package to buy with wallet credit, or (``method: stripe``) by card: the answer is then
    a pending payment (202) whose ``checkout_url`` is Stripe's payment page; the package is
    bought when Stripe confirms the payment."""

    model_config = ConfigDict(extra="forbid")
    package_id: str
    method: Literal["wallet", "stripe"] = "wallet"
    success_url: str | None = Field(default=None, max_length=2000)
    cancel_url: str | None = Field(default=None, max_length=2000)


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
    """A plan to subscribe to: the first month is paid from the wallet or (``method: stripe``)
    by card, answered with a pending payment (202) like a card package purchase."""

    model_config = ConfigDict(extra="forbid")
    plan_id: str
    method: Literal["wallet", "stripe"] = "wallet"
    success_url: str | None = Field(default=None, max_length=2000)
    cancel_url: str | None = Field(default=None, max_length=2000)


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


class AccountsController(Controller):
    """``/v1/accounts``: every key sees only the accounts in its scope (others are 404)."""

    path = "/v1/accounts"
    tags = ["accounts"]

    @idempotent_post(guards=[requires("finance", "reseller")])
    def create(
        self,
        request: Request[Principal, Principal, State],
        data: AccountIn,
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> AccountOut:
        """Create an account; a reseller creates sub-accounts under itself."""
        scope = scope_of(principal)
        parent_id = data.parent_id
        if principal.role == "reseller" and parent_id is None:
            parent_id = principal.account_id
        account = create_account(
            db,
            name=data.name,
            currency=data.currency,
            kind=data.kind,
            parent_id=parent_id,
            external_id=data.external_id,
            credit_limit=data.credit_limit,
            failed_request_policy_id=data.failed_request_policy,
            discounts=[d.model_dump() for d in data.discounts],
            burn_order=list(data.burn_order) if data.burn_order else None,
            low_balance_threshold=data.low_balance_threshold,
            scope=scope,
        )
        if data.billing is not None:
            set_billing_profile(db, account, data.billing.fields())
        return with_billing(db, account_out(account))

    @get("/", sync_to_thread=True, guards=[requires(*ALL_ROLES)])
    def list_accounts(
        self,
        db: Session,
        principal: Principal,
        limit: Limit = 20,
        starting_after: str | None = None,
        parent_id: str | None = None,
    ) -> Page[AccountOut]:
        """Accounts in the caller's scope, oldest first."""
        scope = scope_of(principal)
        stmt = select(Account)
        if scope.kind == "self":
            stmt = stmt.where(Account.id == scope.root_id)
        elif scope.kind == "subtree":
            stmt = stmt.where((Account.id == scope.root_id) | (Account.parent_id == scope.root_id))
        if parent_id:
            stmt = stmt.where(Account.parent_id == parent_id)
        rows = db.scalars(keyset(stmt, Account.id, starting_after, limit)).all()
        return Page[AccountOut].of(rows, limit, lambda a: with_billing(db, account_out(a)))

    @get("/{account_id:str}", sync_to_thread=True, guards=[requires(*ALL_ROLES)])
    def get_one(self, account_id: str, db: Session, principal: Principal) -> AccountOut:
        """One account."""
        return with_billing(db, account_out(get_account(db, account_id, scope=scope_of(principal))))

    @idempotent_patch("/{account_id:str}", guards=[requires("finance")], audit=False)
    def update(
        self,
        request: Request[Principal, Principal, State],
        account_id: str,
        data: AccountPatch,
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> AccountOut:
        """Change an account: name, credit limit, failed-request policy, discounts, burn order,
        low-balance threshold, status (suspend, reactivate, close) and billing terms (net terms
        0/30/60/90 days, tax profile, bill-to details). Each change is recorded in the audit
        log with its before and after values (``GET /v1/audit-events?target_id=...``). A closed
        account cannot change (409 ``account_closed``)."""
        account, diff = update_account(db, account_id, data.changes(), scope=scope_of(principal))
        if data.billing is not None:
            before = billing_out(get_billing_profile(db, account.id))
            set_billing_profile(db, account, data.billing.fields())
            after = billing_out(get_billing_profile(db, account.id))
            old = before.model_dump(mode="json") if before else {}
            new = after.model_dump(mode="json") if after else {}
            for field in sorted(set(old) | set(new)):
                if old.get(field) != new.get(field):
                    diff[f"billing.{field}"] = {
                        "before": old.get(field),
                        "after": new.get(field),
                    }
        if diff:
            record_request(
                db,
                request,
                principal,
                action="account.update",
                target_type="account",
                target_id=account.id,
                changes={"fields": diff, "reason": data.reason},
            )
        return with_billing(db, account_out(account))

    @get("/{account_id:str}/balance", sync_to_thread=True, guards=[requires(*ALL_ROLES)])
    def balance(self, account_id: str, db: Session, principal: Principal) -> BalanceOut:
        """The account's balance, consistent with the ledger (one snapshot)."""
        db.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        account = get_account(db, account_id, scope=scope_of(principal))
        b = balance_of(db, account)
        sub = None
        if b.subscription is not None:
            s = b.subscription
            sub = SubscriptionBalance(
                id=s.id,
                plan_id=s.plan_id,
                status=s.status,
                current_period_end=s.current_period_end,
                cancel_at_period_end=s.cancel_at_period_end,
                windows=[
                    WindowOut(
                        kind=w.kind, unit=w.unit, limit=w.limit, used=w.used, resets_at=w.resets_at
                    )
                    for w in s.windows
                ],
            )
        return BalanceOut(
            currency=b.currency,
            available=b.available.format(),
            paid=b.paid.format(),
            bonus=b.bonus.format(),
            held=b.held.format(),
            overage_unbilled=b.overage_unbilled.format(),
            invoiced_outstanding=b.invoiced_outstanding.format(),
            credit_limit=b.credit_limit.format(),
            reversals_owed=b.reversals_owed.format(),
            packages=[
                PackageOut(
                    id=p.id,
                    models=list(p.models),
                    tokens_remaining=p.tokens_remaining,
                    expires_at=p.expires_at,
                )
                for p in b.packages
            ],
            subscription=sub,
        )

    @post(
        "/{account_id:str}/topups",
        sync_to_thread=True,
        status_code=201,
        guards=[requires("finance", "reseller", "customer")],
        responses=returns(TopupOut, 201),
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
    ) -> Response[bytes]:
        """Record money received: ``bank_transfer`` (finance), ``reseller`` (a reseller on its
        sub-accounts), or ``stripe`` (card checkout)."""
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
            gateway = require_gateway(request.app.state.payments)
            urls = checkout_urls(request.app.state.settings, data.success_url, data.cancel_url)

            def produce_card() -> TopupOut:
                started = start_card_payment(
                    db,
                    gateway,
                    account_id,
                    purpose="topup",
                    urls=urls,
                    amount=data.amount,
                    idempotency_key=idempotency_key,
                    scope=scope_of(principal),
                )
                topup = db.get_one(Topup, started.payment.topup_id)
                return topup_out(topup, get_account(db, account_id), payment=started.payment)

            return run_idempotent(
                db, request, idempotency_key, body=data, status_code=201, produce=produce_card
            )

        def produce() -> TopupOut:
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

        return run_idempotent(
            db, request, idempotency_key, body=data, status_code=201, produce=produce
        )

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
        """The account's top-ups, oldest first, filtered by creation time (``from`` inclusive,
        ``to`` exclusive, with offset), status and method."""
        account = get_account(db, account_id, scope=scope_of(principal))
        stmt = select(Topup).where(Topup.account_id == account.id)
        if (f := aware("from", from_)) is not None:
            stmt = stmt.where(Topup.created_at >= f)
        if (t := aware("to", to)) is not None:
            stmt = stmt.where(Topup.created_at < t)
        if status:
            stmt = stmt.where(Topup.status == status)
        if method:
            stmt = stmt.where(Topup.method == method)
        rows = db.scalars(keyset(stmt, Topup.id, starting_after, limit)).all()
        return Page[TopupOut].of(rows, limit, lambda t: topup_out(t, account))

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
        """The account's subscriptions (live and ended), oldest first, filtered by creation
        time (``from`` inclusive, ``to`` exclusive, with offset), status and plan."""
        account = get_account(db, account_id, scope=scope_of(principal))
        stmt = select(Subscription).where(Subscription.account_id == account.id)
        if (f := aware("from", from_)) is not None:
            stmt = stmt.where(Subscription.created_at >= f)
        if (t := aware("to", to)) is not None:
            stmt = stmt.where(Subscription.created_at < t)
        if status:
            stmt = stmt.where(Subscription.status == status)
        if plan_id:
            stmt = stmt.where(Subscription.plan_id == plan_id)
        rows = db.scalars(keyset(stmt, Subscription.id, starting_after, limit)).all()
        return Page[SubscriptionOut].of(rows, limit, subscription_out)

    @post(
        "/{account_id:str}/package-purchases",
        sync_to_thread=True,
        status_code=201,
        guards=[requires("finance", "reseller", "customer")],
        responses={
            **returns(PackagePurchaseOut, 201),
            **returns(CardPaymentOut, 202, CARD_STARTED),
        },
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
    ) -> Response[bytes]:
        """Buy a token package with wallet credit (or start paying for it by card)."""
        require_open(db, account_id, scope=scope_of(principal))
        if data.method == "stripe":
            return _card_purchase(
                request, db, principal, account_id, data, idempotency_key, "package"
            )

        def produce() -> PackagePurchaseOut:
            p = buy_package(
                db,
                account_id,
                data.package_id,
                at=now_of(request.app.state),
                scope=scope_of(principal),
            )
            account = get_account(db, account_id)
            from wallet.models import CreditLot

            lot = db.get_one(CreditLot, p.lot_id)
            return PackagePurchaseOut(
                id=p.id,
                account_id=p.account_id,
                package_id=p.package_id,
                price=Money.of(Amount(p.price, currency_of(account))),
                tokens=p.tokens,
                lot_id=p.lot_id,
                expires_at=lot.expires_at,
                created_at=p.created_at,
            )

        return run_idempotent(
            db, request, idempotency_key, body=data, status_code=201, produce=produce
        )

    @post(
        "/{account_id:str}/subscriptions",
        sync_to_thread=True,
        status_code=201,
        guards=[requires("finance", "reseller", "customer")],
        responses={**returns(SubscriptionOut, 201), **returns(CardPaymentOut, 202, CARD_STARTED)},
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
    ) -> Response[bytes]:
        """Start a coding-plan subscription; the first month's fee is paid from the wallet (or
        by card: the subscription starts when Stripe confirms the payment)."""
        require_open(db, account_id, scope=scope_of(principal))
        if data.method == "stripe":
            return _card_purchase(request, db, principal, account_id, data, idempotency_key, "plan")

        def produce() -> SubscriptionOut:
            return subscription_out(
                start_subscription(
                    db,
                    account_id,
                    data.plan_id,
                    at=now_of(request.app.state),
                    scope=scope_of(principal),
                )
            )

        return run_idempotent(
            db, request, idempotency_key, body=data, status_code=201, produce=produce
        )


class RefundIn(BaseModel):
    """A refund of unspent paid credit; without ``amount``, all of it."""

    model_config = ConfigDict(extra="forbid")
    amount: DecimalString | None = Field(default=None, json_schema_extra=POSITIVE_DECIMAL)
    reason: str = Field(default="", max_length=500)


class RefundOut(BaseModel):
    """What was refunded, how much bonus was taken back with it, and what to pay out: the
    refunded credit minus the spent bonus that goes with it (``withheld``)."""

    topup_id: str
    refunded: Money
    bonus_clawed_back: Money
    withheld: Money
    payout: Money
    entry_id: int


class TopupsController(Controller):
    """``/v1/topups``: refunds (finance)."""

    path = "/v1/topups"
    tags = ["accounts"]

    @post(
        "/{topup_id:str}/refunds",
        sync_to_thread=True,
        status_code=201,
        guards=[requires("finance")],
        responses=returns(RefundOut, 201),
    )
    def refund(
        self,
        topup_id: str,
        request: Request[Principal, Principal, State],
        data: RefundIn,
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Refund unspent paid credit of a top-up; the bonus that came with that money is taken
        back (unspent bonus first, spent bonus withheld from the payout).
        A top-up paid by card is refunded through Stripe (see ``/v1/payments/{id}/refunds``)."""
        card = payment_for_topup(db, topup_id)
        if card is not None:
            return run_card_refund(
                request,
                db,
                principal,
                card.id,
                CardRefundIn(amount=data.amount, reason=data.reason),
                idempotency_key,
            )

        def produce() -> RefundOut:
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

        return run_idempotent(
            db, request, idempotency_key, body=data, status_code=201, produce=produce
        )


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
) -> Response[bytes]:
    """Start paying for a package or a plan by card: a pending payment (202)."""
    gateway = require_gateway(request.app.state.payments)
    urls = checkout_urls(request.app.state.settings, data.success_url, data.cancel_url)

    def produce() -> BaseModel:
        started = start_card_payment(
            db,
            gateway,
            account_id,
            purpose=purpose,
            urls=urls,
            package_id=data.package_id if isinstance(data, PackagePurchaseIn) else None,
            plan_id=data.plan_id if isinstance(data, SubscriptionIn) else None,
            idempotency_key=idempotency_key,
            scope=scope_of(principal),
        )
        return payment_out(db, started.payment)

    return run_idempotent(db, request, idempotency_key, body=data, status_code=202, produce=produce)
