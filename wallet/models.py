"""Wallet tables: accounts, credit lots, top-ups, package purchases and subscriptions.

Also the quota windows, and the outbox of events for webhooks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from ledger.amounts import Amount
from ledger.base import Atoms, Base, UTCDateTime
from ledger.units import unit as unit_of


class Account(Base):
    """A customer or reseller account in one currency.

    A reseller's sub-accounts (``parent_id`` set) keep their money in the reseller's own book.
    """

    __tablename__ = "wallet_accounts"
    __table_args__ = (
        CheckConstraint("kind IN ('customer', 'reseller')", name="kind_known"),
        CheckConstraint("credit_limit >= 0", name="credit_limit_non_negative"),
        CheckConstraint("parent_id IS NULL OR parent_id <> id", name="not_own_parent"),
        CheckConstraint("status IN ('active', 'suspended', 'closed')", name="status_known"),
        Index(
            "uq_wallet_accounts_external_id",
            text("coalesce(parent_id, '')"),
            "external_id",
            unique=True,
            postgresql_where=text("external_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("wallet_accounts.id"), index=True)
    external_id: Mapped[str | None] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(Text)
    credit_limit: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    failed_request_policy_id: Mapped[str | None] = mapped_column(Text)
    discounts: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'"))
    burn_order: Mapped[list[str] | None] = mapped_column(JSONB)
    low_balance_threshold: Mapped[int | None] = mapped_column(Atoms)
    expiring_notice_days: Mapped[int] = mapped_column(Integer, server_default=text("7"))
    #: ``active``; ``suspended`` (usage and new authorizations refused, reversible); ``closed``
    #: (final; only an account with nothing left in it can be closed)
    status: Mapped[str] = mapped_column(Text, server_default=text("'active'"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class CreditLot(Base):
    """A lot of credit: paid money, bonus money or package tokens, with priority and expiry.

    ``granted``, ``remaining`` and ``reserved`` count the lot's ``unit``: atoms of the
    account's currency for money lots (``paid``, ``bonus``), whole tokens for ``package`` lots
    (:attr:`remaining_amount` and :attr:`granted_amount` carry the unit).
    ``remaining`` is what can be spent; ``reserved`` is what open gateway authorizations hold
    from it. ``remaining + reserved`` always equals what the ledger holds for the lot: summed
    over an account's lots of one kind, the balance of the matching ledger account.
    """

    __tablename__ = "wallet_credit_lots"
    __table_args__ = (
        CheckConstraint("kind IN ('paid', 'bonus', 'package')", name="kind_known"),
        CheckConstraint(
            "remaining >= 0 AND reserved >= 0 AND remaining + reserved <= granted",
            name="remaining_in_range",
        ),
        CheckConstraint("deferred >= 0", name="deferred_non_negative"),
        # no index predicate or key names remaining/reserved, so spending from a lot is a HOT
        # update (no index writes) on a page with room (fillfactor)
        Index("ix_wallet_credit_lots_account_kind", "account_id", "kind"),
        Index(
            "ix_wallet_credit_lots_expiry",
            "expires_at",
            postgresql_where=text("expired_at IS NULL AND expires_at IS NOT NULL"),
        ),
        {"postgresql_with": {"fillfactor": 80}},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("wallet_accounts.id"))
    kind: Mapped[str] = mapped_column(Text)
    unit: Mapped[str] = mapped_column(Text)
    ledger_account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("ledger_accounts.id"))
    granted: Mapped[int] = mapped_column(Atoms)
    remaining: Mapped[int] = mapped_column(Atoms)
    reserved: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    priority: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Packages and bonus credit pay only for usage dated from this instant on (paid money
    #: has no start: it pays for earlier usage too).
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    models: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    # package lots: the money still deferred (recognized as tokens are consumed or expire)
    price: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    deferred: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    source_type: Mapped[str] = mapped_column(Text)
    source_id: Mapped[str] = mapped_column(Text)
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))

    @property
    def remaining_amount(self) -> Amount:
        """What can be spent, in the lot's unit (currency atoms, or tokens for packages)."""
        return Amount(self.remaining, unit_of(self.unit))

    @property
    def granted_amount(self) -> Amount:
        """What the lot was granted, in the lot's unit (currency atoms, or tokens)."""
        return Amount(self.granted, unit_of(self.unit))


class Topup(Base):
    """A top-up: paid credit plus the bonus the rule in force gave."""

    __tablename__ = "wallet_topups"
    __table_args__ = (
        CheckConstraint("method IN ('bank_transfer', 'stripe', 'reseller')", name="method_known"),
        CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status_known"),
        UniqueConstraint("account_id", "idempotency_key", name="uq_wallet_topups_idempotency"),
        Index(
            "ix_wallet_topups_bank_reference",
            "reference",
            postgresql_where=text("method = 'bank_transfer' AND reference IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("wallet_accounts.id"), index=True)
    method: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    amount: Mapped[int] = mapped_column(Atoms)
    bonus: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    bonus_rule_id: Mapped[str | None] = mapped_column(Text)
    refunded: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    bonus_clawed_back: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    reference: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    paid_lot_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("wallet_credit_lots.id"))
    bonus_lot_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("wallet_credit_lots.id")
    )
    entry_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("ledger_entries.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class PackagePurchase(Base):
    """A token package bought from the wallet balance."""

    __tablename__ = "wallet_package_purchases"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("wallet_accounts.id"), index=True)
    package_id: Mapped[str] = mapped_column(Text)
    price: Mapped[int] = mapped_column(Atoms)
    tokens: Mapped[int] = mapped_column(Atoms)
    lot_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("wallet_credit_lots.id"))
    entry_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("ledger_entries.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class Subscription(Base):
    """A coding-plan subscription with its current period."""

    __tablename__ = "wallet_subscriptions"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'past_due', 'canceled')", name="status_known"),
        Index(
            "uq_wallet_subscriptions_one_live",
            "account_id",
            unique=True,
            postgresql_where=text("status <> 'canceled'"),
        ),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("wallet_accounts.id"))
    plan_id: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    current_period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    current_period_end: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class SubscriptionPeriod(Base):
    """One paid period of a subscription; unique per start, so a renewal happens once."""

    __tablename__ = "wallet_subscription_periods"
    __table_args__ = (
        UniqueConstraint(
            "subscription_id", "period_start", name="uq_wallet_subscription_periods_start"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("wallet_subscriptions.id"))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    fee: Mapped[int] = mapped_column(Atoms)
    entry_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("ledger_entries.id"))
    recognized_entry_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ledger_entries.id")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class QuotaWindow(Base):
    """The current window of one plan quota (kind and unit) for a subscription."""

    __tablename__ = "wallet_quota_windows"
    __table_args__ = (
        UniqueConstraint("subscription_id", "kind", "unit", name="uq_wallet_quota_windows_kind"),
        CheckConstraint("used >= 0", name="used_non_negative"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("wallet_subscriptions.id"))
    kind: Mapped[str] = mapped_column(Text)
    unit: Mapped[str] = mapped_column(Text)
    limit: Mapped[int] = mapped_column(BigInteger)
    window_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    used: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class WebhookEndpoint(Base):
    """Where an account (or, with no account, the operator) receives signed events."""

    __tablename__ = "wallet_webhook_endpoints"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    account_id: Mapped[str | None] = mapped_column(ForeignKey("wallet_accounts.id"), index=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class OutboxEvent(Base):
    """An event written in the same transaction as its cause, delivered later by a job.

    ``dedupe_key`` makes emitting the same fact twice harmless (e.g. one ``credits.expiring``
    per lot).
    """

    __tablename__ = "wallet_outbox"
    __table_args__ = (
        Index(
            "ix_wallet_outbox_due", "next_attempt_at", postgresql_where=text("delivered_at IS NULL")
        ),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("wallet_accounts.id"), index=True)
    type: Mapped[str] = mapped_column(Text)
    dedupe_key: Mapped[str | None] = mapped_column(Text, unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    #: when its deliveries (one per matching endpoint) were created
    fanned_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    """One event to one endpoint.

    Delivered once (an endpoint that answered 2xx is never sent the event again when another
    endpoint fails), retried with backoff while ``pending``, and ``dead`` (the dead letters an
    operator lists and replays) after its last attempt.
    """

    __tablename__ = "wallet_webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="uq_wallet_webhook_deliveries_pair"),
        CheckConstraint("status IN ('pending', 'delivered', 'dead')", name="status_known"),
        Index(
            "ix_wallet_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index(
            "ix_wallet_webhook_deliveries_dead",
            "dead_at",
            postgresql_where=text("status = 'dead'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("wallet_outbox.id"), index=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("wallet_webhook_endpoints.id"), index=True)
    status: Mapped[str] = mapped_column(Text, server_default=text("'pending'"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    replays: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dead_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class OveragePayment(Base):
    """Money a reseller collected from its customer for a sub-account's overage.

    Recorded once per sub-account and reference (``wallet/overage_payments.py``).
    """

    __tablename__ = "wallet_overage_payments"
    __table_args__ = (
        UniqueConstraint("account_id", "reference", name="uq_wallet_overage_payments_reference"),
        CheckConstraint("amount > 0", name="positive"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("wallet_accounts.id"), index=True)
    reseller_id: Mapped[str] = mapped_column(ForeignKey("wallet_accounts.id"))
    amount: Mapped[int] = mapped_column(Atoms)
    currency: Mapped[str] = mapped_column(Text)
    reference: Mapped[str] = mapped_column(Text)
    entry_id: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class UsageClaim(Base):
    """A usage record id, claimed in the same transaction as its charge (exactly once).

    Kept for at least the open billing period plus 35 days; a replay inside that window
    returns the first result and changes nothing.
    """

    __tablename__ = "wallet_usage_claims"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    account_id: Mapped[str] = mapped_column(Text)
    claimed_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=text("now()"), index=True
    )


class UsageRecord(Base):
    """A charged usage record with its rated, billed and credited amounts.

    Partitioned by month of ``occurred_at``; see migration 0004.
    """

    __tablename__ = "wallet_usage_records"
    __table_args__ = (
        PrimaryKeyConstraint("occurred_at", "id", name="pk_wallet_usage_records"),
        Index("ix_wallet_usage_records_id", "id"),
        Index("ix_wallet_usage_records_account", "account_id", "occurred_at"),
        Index("ix_wallet_usage_records_account_received", "account_id", "received_at"),
        {"postgresql_partition_by": "RANGE (occurred_at)"},
    )

    id: Mapped[str] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    account_id: Mapped[str] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_write_5m_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_write_1h_tokens: Mapped[int] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_write_30m_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    cache_write_12h_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    input_audio_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    input_image_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    output_audio_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    output_image_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # per-request fees counted (``{"web_search": 2}``); NULL: none
    tool_calls: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # the service tier that priced it (NULL: standard)
    service_tier: Mapped[str | None] = mapped_column(Text)
    # the upstream vendor that served the call, as the gateway says (cost and margin)
    upstream: Mapped[str | None] = mapped_column(Text)
    batch: Mapped[bool] = mapped_column(Boolean)
    http_status: Mapped[int] = mapped_column(Integer)
    finish_reason: Mapped[str | None] = mapped_column(Text)
    failure_kind: Mapped[str | None] = mapped_column(Text)
    policy_id: Mapped[str] = mapped_column(Text)
    policy_version: Mapped[int] = mapped_column(Integer)
    price_source: Mapped[str] = mapped_column(Text)
    rate_card_id: Mapped[str | None] = mapped_column(Text)
    rated: Mapped[int] = mapped_column(Atoms)
    billed: Mapped[int] = mapped_column(Atoms)
    credited: Mapped[int] = mapped_column(Atoms)
    reason: Mapped[str | None] = mapped_column(Text)
    drawn: Mapped[dict[str, Any]] = mapped_column(JSONB)
    wholesale_billed: Mapped[int | None] = mapped_column(Atoms)
    # a sub-account's record: how the reseller's float paid the wholesale price (bonus, paid,
    # overage atoms as strings, like ``drawn``) and what was not billed at wholesale
    wholesale_drawn: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    wholesale_credited: Mapped[int | None] = mapped_column(Atoms)
    authorization_id: Mapped[str | None] = mapped_column(Text)
    entry_id: Mapped[int | None] = mapped_column(BigInteger)
    tags: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))


class Authorization(Base):
    """A gateway authorization: money or tokens reserved through the burn order before calls.

    A single-use hold (``multi_capture`` false) reserves an estimate for one call; the first
    usage record naming it captures it and the rest goes back. A multi-capture grant reserves
    an amount that usage records naming it capture many times; increments add to it; void or
    expiry returns the rest.

    The reservation lives in the wallet, not the ledger: ``reserved`` lists what it holds from
    each lot (``[[lot_id, atoms], ...]``, the reseller's float lots too, each lot's ``reserved``
    column counting it), ``reserved_quota`` the plan quota, ``overage``/``reseller_overage``
    the credit limit. ``held_money``/``held_tokens`` are what was granted in total;
    ``captured_*`` what records took from it; ``released_*`` what went back. Capture, void and
    expiry change it only under the account row lock, so each atom is given back once.
    ``hold_entry_id`` is set only on authorizations made before migration 0009 (their pending
    ledger entry).
    """

    __tablename__ = "wallet_authorizations"
    __table_args__ = (
        CheckConstraint(
            "status IN ('approved', 'declined', 'captured', 'voided', 'expired')",
            name="status_known",
        ),
        Index(
            "ix_wallet_authorizations_open",
            "expires_at",
            postgresql_where=text("status = 'approved'"),
        ),
        Index(
            "ix_wallet_authorizations_open_by_account",
            "account_id",
            postgresql_where=text("status = 'approved'"),
        ),
        Index(
            "ix_wallet_authorizations_open_by_reseller",
            "reseller_account_id",
            postgresql_where=text("status = 'approved' AND reseller_account_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("wallet_accounts.id"), index=True)
    reseller_account_id: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(Text)
    multi_capture: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # a multi-capture grant of package tokens (amounts in tokens), not money
    token_grant: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    status: Mapped[str] = mapped_column(Text)
    decline_code: Mapped[str | None] = mapped_column(Text)
    requested: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    held_money: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    held_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    captured_money: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    captured_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    released_money: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    released_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    captures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    final: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    plan_covered: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    overage: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    reserved: Mapped[list[list[int]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    # plan quota taken: [[window_id, amount, window_end ISO]]; given back only to that window
    reserved_quota: Mapped[list[list[Any]]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb")
    )
    # a sub-account's authorization: the reseller's credit limit reserved at wholesale
    reseller_overage: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    hold_entry_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("ledger_entries.id"))
    usage_record_id: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class CreditFreeze(Base):
    """Credit of one top-up made unspendable until a dispute (or other claim) is settled.

    The frozen amounts are taken out of the top-up's lots (so usage, holds and purchases cannot
    spend them) and held in the ledger by a pending entry (so the ledger agrees with the lots).
    Exactly one resolution follows: ``released`` (the lots get the amounts back, the hold is
    voided) or ``forfeited`` (the hold is posted: the money leaves). ``key`` makes freezing the
    same claim twice return the first freeze.
    """

    __tablename__ = "wallet_credit_freezes"
    __table_args__ = (
        CheckConstraint("status IN ('frozen', 'released', 'forfeited')", name="status_known"),
        CheckConstraint(
            "frozen_paid >= 0 AND frozen_bonus >= 0 AND requested >= 0", name="amounts_non_negative"
        ),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("wallet_accounts.id"), index=True)
    topup_id: Mapped[str] = mapped_column(ForeignKey("wallet_topups.id"), index=True)
    status: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text, server_default=text("''"))
    requested: Mapped[int] = mapped_column(Atoms)
    frozen_paid: Mapped[int] = mapped_column(Atoms)
    frozen_bonus: Mapped[int] = mapped_column(Atoms)
    reserved: Mapped[list[list[int]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    forfeit_account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("ledger_accounts.id"))
    hold_entry_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("ledger_entries.id"))
    resolution_entry_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ledger_entries.id")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
