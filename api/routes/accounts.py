"""Accounts: creation, listing, changes and balances.

Top-ups, refunds, packages and subscriptions are in ``topups.py`` and ``subscriptions.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from litestar import Controller, Request, get
from litestar.datastructures import State
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy.orm import Session

from api.audit import record_request
from api.auth import Principal, requires
from api.idempotency import idempotent_patch, idempotent_post
from api.paging import keyset
from api.routes.billing_profiles import BillingIn, BillingOut, billing_out
from api.schemas import (
    PCT_PATTERN,
    DecimalString,
    IdempotencyKey,
    Limit,
    Money,
    NonNegativeDecimalString,
    Page,
    scope_of,
)
from invoicing.profiles import get_billing_profile, set_billing_profile
from wallet.accounts import accounts_query, create_account, get_account, update_account
from wallet.balance import balance_of
from wallet.ledger_accounts import currency_of
from wallet.models import Account

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
    low_balance_threshold: NonNegativeDecimalString | None = None
    billing: BillingIn | None = None


BurnSource = Literal["plan", "package", "bonus", "paid", "overage"]

#: fields of a PATCH that may be null: null puts the default back
_NULLABLE = ("failed_request_policy", "burn_order", "low_balance_threshold")


class AccountPatch(BaseModel):
    """What can change on an account; only the fields sent change.

    ``null`` puts the default back for ``failed_request_policy`` (the built-in policy),
    ``burn_order`` (the default order) and ``low_balance_threshold`` (no alert). ``status``:
    ``suspended`` refuses the account's usage and new authorizations (reversible); ``closed`` is
    final and refused (409 ``account_not_empty``) while credit, tokens, debts, open authorizations,
    a live subscription or open sub-accounts remain. ``reason`` is kept in the audit log with the
    change.
    """

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
        credit_limit=Money.atoms(a.credit_limit, unit),
        failed_request_policy=a.failed_request_policy_id,
        discounts=[Discount(model=d.get("model"), pct=str(d["pct"])) for d in a.discounts],
        burn_order=a.burn_order,
        low_balance_threshold=Money.atoms(a.low_balance_threshold, unit)
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
    """``available``: money the account can spend now (paid + bonus - held + unused credit limit).

    Token entitlements are listed apart.
    """

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
        stmt = accounts_query(scope_of(principal), parent_id=parent_id)
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
        """Change an account.

        Name, credit limit, failed-request policy, discounts, burn order, low-balance threshold,
        status (suspend, reactivate, close) and billing terms (net terms 0/30/60/90 days, tax
        profile, bill-to details). Each change is recorded in the audit log with its before and
        after values (``GET /v1/audit-events?target_id=...``). A closed account cannot change (409
        ``account_closed``).
        """
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
