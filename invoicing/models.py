"""Invoicing tables: tax and billing profiles, periods, invoices, lines, credit notes, payments.

Also the number series that number invoices and credit notes.

Amounts are integer atoms (``Atoms``); document amounts are whole minor units, exact amounts
keep every atom. A finalized invoice is immutable except for its settlement columns
(``amount_paid``, ``credited``, ``credited_receivable``, ``status``, ``paid_at``, ``voided_at``,
``void_entry_id``), and its lines are immutable; a trigger enforces both (migrations/sql/
invoicing_immutable.up.sql).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from ledger.base import Atoms, Base, UTCDateTime

INVOICE_STATUSES = ("draft", "finalized", "paid", "disputed", "void")
NET_TERMS_DAYS = (0, 30, 60, 90)


class TaxProfile(Base):
    """A tax rate in percent (e.g. VAT 20, none 0).

    Never edited: a new rate is a new profile; each invoice line keeps the rate it was taxed at.
    """

    __tablename__ = "invoicing_tax_profiles"
    __table_args__ = (CheckConstraint("rate_pct >= 0 AND rate_pct <= 100", name="rate_in_range"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    rate_pct: Mapped[Decimal] = mapped_column(Numeric(7, 4))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class BillingProfile(Base):
    """What billing needs to know about a billing account.

    Payment terms, tax profile and the bill-to details printed on its invoices.
    """

    __tablename__ = "invoicing_billing_profiles"
    __table_args__ = (CheckConstraint("net_terms_days IN (0, 30, 60, 90)", name="net_terms_known"),)

    account_id: Mapped[str] = mapped_column(ForeignKey("wallet_accounts.id"), primary_key=True)
    net_terms_days: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    tax_profile_id: Mapped[str | None] = mapped_column(ForeignKey("invoicing_tax_profiles.id"))
    legal_name: Mapped[str | None] = mapped_column(Text)
    billing_address: Mapped[str | None] = mapped_column(Text)
    tax_id: Mapped[str | None] = mapped_column(Text)
    billing_email: Mapped[str | None] = mapped_column(Text)
    #: the operator settles this account's invoices from its paid credit when they are
    #: finalized (the tax on prepaid consumption), instead of waiting for a payment
    settle_from_prepaid: Mapped[bool] = mapped_column(server_default=text("false"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class BillingPeriod(Base):
    """A month-end close run.

    ``closing`` while it runs, ``closed`` once every billing account has been processed (the
    scheduler then leaves the period alone).
    """

    __tablename__ = "invoicing_billing_periods"
    __table_args__ = (CheckConstraint("status IN ('closing', 'closed')", name="status_known"),)

    period: Mapped[str] = mapped_column(Text, primary_key=True)
    status: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accounts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    invoices: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class Invoice(Base):
    """One invoice per billing account and period (unique), draft until finalized.

    ``usage_cutoff_at`` is the usage gate's cut-off (wallet/gate.py): usage received at or
    before it and not on an earlier invoice is on this one; anything received later goes to
    the next invoice. ``previous_cutoff_at`` is the cut-off of the account's previous invoice.
    """

    __tablename__ = "invoicing_invoices"
    __table_args__ = (
        UniqueConstraint("account_id", "period", name="uq_invoicing_invoices_account_period"),
        CheckConstraint(
            "status IN ('draft', 'finalized', 'paid', 'disputed', 'void')", name="status_known"
        ),
        CheckConstraint("(status = 'draft') = (number IS NULL)", name="numbered_when_final"),
        CheckConstraint(
            "amount_paid >= 0 AND credited >= 0 AND credited_receivable >= 0 AND disputed >= 0",
            name="settlement_non_negative",
        ),
        CheckConstraint("amount_paid + credited_receivable <= amount_due", name="not_overpaid"),
        Index("ix_invoicing_invoices_period", "period"),
        Index(
            "ix_invoicing_invoices_open",
            "due_date",
            postgresql_where=text("status = 'finalized'"),
        ),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("wallet_accounts.id"), index=True)
    period: Mapped[str] = mapped_column(Text)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    currency: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    number: Mapped[str | None] = mapped_column(Text, unique=True)
    series: Mapped[str | None] = mapped_column(Text)
    sequence: Mapped[int | None] = mapped_column(BigInteger)
    usage_cutoff_at: Mapped[datetime] = mapped_column(UTCDateTime)
    previous_cutoff_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    bill_to: Mapped[dict[str, Any]] = mapped_column(JSONB)
    net_terms_days: Mapped[int] = mapped_column(Integer)
    tax_profile_id: Mapped[str | None] = mapped_column(Text)
    tax_rate_pct: Mapped[Decimal | None] = mapped_column(Numeric(7, 4))
    subtotal: Mapped[int] = mapped_column(Atoms)
    tax: Mapped[int] = mapped_column(Atoms)
    total: Mapped[int] = mapped_column(Atoms)
    prepaid_applied: Mapped[int] = mapped_column(Atoms)
    amount_due: Mapped[int] = mapped_column(Atoms)
    exact_due: Mapped[int] = mapped_column(Atoms)
    rounding: Mapped[int] = mapped_column(Atoms)
    amount_paid: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    credited: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    credited_receivable: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    due_date: Mapped[date | None] = mapped_column(Date)
    finalize_entry_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ledger_entries.id")
    )
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: payments on it under an open dispute (the invoice is ``disputed`` while this is above 0)
    disputed: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    void_entry_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("ledger_entries.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class InvoiceLine(Base):
    """An invoice line: ``due`` (billed), ``prepaid`` (paid from the prepaid balance) or ``info``.

    ``due`` lines are billed; ``prepaid`` lines were paid from the prepaid balance (their tax is
    billed); ``info`` lines are statements (usage covered by packages and plan quota, failed-request
    credits). ``tax = round(taxable x tax_rate_pct)``.

    ``source_type``/``source_id`` name what a line bills once (a package purchase, a subscription
    period); the partial unique index makes billing it on a second invoice impossible.
    """

    __tablename__ = "invoicing_invoice_lines"
    __table_args__ = (
        CheckConstraint("settlement IN ('due', 'prepaid', 'info')", name="settlement_known"),
        UniqueConstraint("invoice_id", "position", name="uq_invoicing_invoice_lines_position"),
        Index(
            "uq_invoicing_invoice_lines_source",
            "source_type",
            "source_id",
            unique=True,
            postgresql_where=text("source_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoicing_invoices.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(Text)
    source_period: Mapped[str | None] = mapped_column(Text)
    requests: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    settlement: Mapped[str] = mapped_column(Text)
    amount_exact: Mapped[int] = mapped_column(Atoms)
    amount: Mapped[int] = mapped_column(Atoms)
    tax_rate_pct: Mapped[Decimal | None] = mapped_column(Numeric(7, 4))
    #: the rounded part of ``amount`` that is taxed (the paid-credit part of a prepaid line)
    taxable: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    tax: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    source_type: Mapped[str | None] = mapped_column(Text)
    source_id: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))


class NumberSeries(Base):
    """A gapless counter per series (``INV-USD-2026``, ``CN-USD-2026``).

    It is incremented in the transaction that finalizes the document and stays row-locked until that
    commits, so a rollback gives the number back and no two documents share one.
    """

    __tablename__ = "invoicing_number_series"

    series: Mapped[str] = mapped_column(Text, primary_key=True)
    last_value: Mapped[int] = mapped_column(BigInteger)


class CreditNote(Base):
    """A credit note against a finalized invoice, numbered in its own series.

    ``to_receivable`` reduced what the customer owes on the invoice; ``to_wallet`` (what was
    already paid, or paid from the prepaid balance) went back to the prepaid balance as a lot.
    """

    __tablename__ = "invoicing_credit_notes"
    __table_args__ = (
        CheckConstraint("total = net + tax", name="total_adds_up"),
        CheckConstraint("total = to_receivable + to_wallet", name="total_split"),
        CheckConstraint("to_bonus >= 0 AND to_bonus <= to_wallet", name="bonus_within_wallet"),
        CheckConstraint("net > 0 AND tax >= 0", name="positive"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    number: Mapped[str] = mapped_column(Text, unique=True)
    series: Mapped[str] = mapped_column(Text)
    sequence: Mapped[int] = mapped_column(BigInteger)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoicing_invoices.id"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("wallet_accounts.id"))
    currency: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    net: Mapped[int] = mapped_column(Atoms)
    tax: Mapped[int] = mapped_column(Atoms)
    total: Mapped[int] = mapped_column(Atoms)
    to_receivable: Mapped[int] = mapped_column(Atoms)
    to_wallet: Mapped[int] = mapped_column(Atoms)
    #: of ``to_wallet``, what went back as bonus credit (lines paid with bonus)
    to_bonus: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    entry_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("ledger_entries.id"))
    lot_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("wallet_credit_lots.id"))
    bonus_lot_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("wallet_credit_lots.id")
    )
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class CreditNoteLine(Base):
    """What a credit note credits: an invoice line (or, without one, the invoice's due part)."""

    __tablename__ = "invoicing_credit_note_lines"
    __table_args__ = (CheckConstraint("net > 0 AND tax >= 0", name="positive"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    credit_note_id: Mapped[str] = mapped_column(ForeignKey("invoicing_credit_notes.id"), index=True)
    invoice_line_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("invoicing_invoice_lines.id"), index=True
    )
    description: Mapped[str] = mapped_column(Text)
    settlement: Mapped[str] = mapped_column(Text)
    net: Mapped[int] = mapped_column(Atoms)
    tax: Mapped[int] = mapped_column(Atoms)
    #: of ``net``, what went back as bonus credit
    to_bonus: Mapped[int] = mapped_column(Atoms, server_default=text("0"))


class InvoicePayment(Base):
    """Money received against an invoice (bank transfer, card...), once per method and reference.

    Recording the same payment again returns the first record.

    ``reversed`` is the part of it that went back (a card refund, a lost dispute): that much
    is owed on the invoice again (``receivable:invoiced``), and ``invoice.amount_paid`` no
    longer counts it.
    """

    __tablename__ = "invoicing_payments"
    __table_args__ = (
        UniqueConstraint("method", "reference", name="uq_invoicing_payments_reference"),
        CheckConstraint("amount > 0", name="positive"),
        CheckConstraint("reversed >= 0 AND reversed <= amount", name="reversed_within_amount"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoicing_invoices.id"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("wallet_accounts.id"))
    amount: Mapped[int] = mapped_column(Atoms)
    method: Mapped[str] = mapped_column(Text)
    reference: Mapped[str] = mapped_column(Text)
    entry_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("ledger_entries.id"))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    reversed: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
