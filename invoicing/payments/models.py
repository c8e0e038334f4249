"""Payment tables: card payments, provider events (webhooks), disputes, reconciliation reports."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from ledger.base import Atoms, Base, UTCDateTime

#: What a card payment pays for: a top-up, a package, a plan's first month, or a finalized
#: invoice (``purpose_ref`` is then the invoice id).
PURPOSES = ("topup", "package", "plan", "invoice")


class Payment(Base):
    """One card payment through the provider, for a top-up, a package, a plan or an invoice.

    For a top-up, package or plan the money enters the wallet as a top-up (``topup_id``,
    pending until the provider confirms it); a package or plan is then bought from that
    top-up's paid credit in the same transaction (``fulfilled_ref``). An invoice payment has no
    top-up when it is started: the money settles ``receivable:invoiced`` directly
    (``fulfilled_ref`` names the ``invoicing_payments`` row); only money beyond what the
    invoice still owed at settlement becomes a paid top-up (``topup_id``, set then).
    ``refunded_minor`` is the provider's cumulative refunded amount that has been applied, so
    refunds are applied exactly once whatever the order their events arrive in.
    """

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("purpose IN ('topup', 'package', 'plan', 'invoice')", name="purpose_known"),
        CheckConstraint("topup_id IS NOT NULL OR purpose = 'invoice'", name="topup_unless_invoice"),
        Index(
            "ix_payments_invoice",
            "purpose_ref",
            postgresql_where=text("purpose = 'invoice'"),
        ),
        CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed', 'expired')", name="status_known"
        ),
        CheckConstraint("amount_minor > 0 AND refunded_minor >= 0", name="amounts_valid"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("wallet_accounts.id"), index=True)
    provider: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(Text)
    purpose_ref: Mapped[str | None] = mapped_column(Text)
    topup_id: Mapped[str | None] = mapped_column(ForeignKey("wallet_topups.id"), unique=True)
    status: Mapped[str] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(Text)
    amount: Mapped[int] = mapped_column(Atoms)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    refunded_minor: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    checkout_session_id: Mapped[str | None] = mapped_column(Text, unique=True)
    checkout_url: Mapped[str | None] = mapped_column(Text)
    checkout_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    payment_intent_id: Mapped[str | None] = mapped_column(Text, unique=True)
    charge_id: Mapped[str | None] = mapped_column(Text, unique=True)
    fulfilled_ref: Mapped[str | None] = mapped_column(Text)
    fulfillment_error: Mapped[str | None] = mapped_column(Text)
    failure_code: Mapped[str | None] = mapped_column(Text)
    failure_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class PaymentEvent(Base):
    """A verified provider event (webhook), unique by the provider's event id.

    It is stored in the same transaction as its effect.

    ``status``: ``processed`` (its effect is committed with it), ``ignored`` (nothing to do),
    ``deferred`` (it concerns a payment not known yet, e.g. a refund that arrived before the
    payment's completion; applied when that payment succeeds) or ``failed`` (processing raised;
    the effect was rolled back and the event is retried on redelivery and by a job).
    """

    __tablename__ = "payment_events"
    __table_args__ = (
        CheckConstraint(
            "status IN ('processed', 'ignored', 'deferred', 'failed')", name="status_known"
        ),
        Index(
            "ix_payment_events_deferred",
            "payment_intent_id",
            postgresql_where=text("status = 'deferred'"),
        ),
        Index(
            "ix_payment_events_failed", "received_at", postgresql_where=text("status = 'failed'")
        ),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    provider: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(Text, server_default=text("''"))
    object_id: Mapped[str | None] = mapped_column(Text)
    payment_intent_id: Mapped[str | None] = mapped_column(Text)
    payment_id: Mapped[str | None] = mapped_column(Text, index=True)
    livemode: Mapped[bool] = mapped_column(server_default=text("false"))
    provider_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PaymentDispute(Base):
    """A dispute (chargeback) on a card payment and what it did to the wallet.

    ``withdrawn_minor`` is the net amount the provider has taken from our balance for it
    (withdrawn minus reinstated), as booked between ``cash:stripe`` and ``cash:stripe_disputed``.
    """

    __tablename__ = "payment_disputes"
    __table_args__ = (CheckConstraint("outcome IN ('open', 'won', 'lost')", name="outcome_known"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    provider_status: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(Text, server_default=text("'open'"))
    withdrawn_minor: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    freeze_id: Mapped[str | None] = mapped_column(ForeignKey("wallet_credit_freezes.id"))
    receivable: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    #: what it counts as disputed on the invoice an invoice payment paid, while it is open
    invoice_disputed: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PaymentRefund(Base):
    """A refund the provider reported by id, kept so that a failure after it applied is undone once.

    The provider reports it by ``refund.*``, ``charge.refund.updated`` or the answer to a refund
    finance made; a refund that **fails** after it was applied is undone exactly once.

    ``status`` follows the provider (``pending``, ``requires_action``, ``succeeded``,
    ``failed``, ``canceled``); ``undone_minor`` is what the failure gave back in our books (the
    refund's amount, or less when less of it had been applied), ``undo_entry_ids`` the ledger
    entries that did it. ``provider_created_at`` dates the refund, ``failed_at`` its failure:
    a ``charge.refunded`` snapshot taken between the two still counts it, and is read without it.
    """

    __tablename__ = "payment_refunds"
    __table_args__ = (
        CheckConstraint("amount_minor > 0 AND undone_minor >= 0", name="amounts_valid"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    provider_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    undone_minor: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    undo_entry_ids: Mapped[list[int]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class PaymentRefundApplication(Base):
    """One step of bringing our books up to the provider's cumulative refunded amount.

    A step of ``apply_refunded_total`` keeps the total it reached, the amount it added and the
    ledger entries it wrote (``parts``: ``{"kind": "topup", "entry_id", "topup_id"}`` or ``{"kind":
    "invoice", "entry_id", "invoice_payment_id", "amount"}``). A refund that fails undoes the latest
    applications (``undone_at``) and applies again what the failure did not take back.
    """

    __tablename__ = "payment_refund_applications"
    __table_args__ = (CheckConstraint("delta_minor > 0", name="positive"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    delta_minor: Mapped[int] = mapped_column(BigInteger)
    parts: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    undone_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class ReconciliationReport(Base):
    """One day of provider balance transactions compared with ``cash:stripe``, in one currency.

    Re-running a day replaces its report (``run_count`` counts the runs).
    """

    __tablename__ = "payment_reconciliations"
    __table_args__ = (
        UniqueConstraint("provider", "day", "currency", name="uq_payment_reconciliations_day"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(Text)
    day: Mapped[date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(Text)
    provider_net: Mapped[int] = mapped_column(Atoms)
    provider_fees: Mapped[int] = mapped_column(Atoms)
    ledger_net: Mapped[int] = mapped_column(Atoms)
    difference: Mapped[int] = mapped_column(Atoms)
    transactions: Mapped[int] = mapped_column(Integer)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB)
    run_count: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
