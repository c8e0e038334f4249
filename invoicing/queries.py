"""Read queries of invoices: their lists, and an invoice's lines, credit notes and payments."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, select, text
from sqlalchemy.orm import Session

from invoicing.models import CreditNote, Invoice, InvoiceLine, InvoicePayment
from wallet.accounts import Scope


def invoice_lines(db: Session, invoice_id: str) -> Sequence[InvoiceLine]:
    """The invoice's lines by position."""
    return db.scalars(
        select(InvoiceLine)
        .where(InvoiceLine.invoice_id == invoice_id)
        .order_by(InvoiceLine.position)
    ).all()


def invoice_credit_notes(db: Session, invoice_id: str) -> Sequence[CreditNote]:
    """The invoice's credit notes by number."""
    return db.scalars(
        select(CreditNote).where(CreditNote.invoice_id == invoice_id).order_by(CreditNote.number)
    ).all()


def invoice_payments(db: Session, invoice_id: str) -> Sequence[InvoicePayment]:
    """The payments recorded against the invoice, by when they were received (then id)."""
    return db.scalars(
        select(InvoicePayment)
        .where(InvoicePayment.invoice_id == invoice_id)
        .order_by(InvoicePayment.received_at, InvoicePayment.id)
    ).all()


def invoices_query(
    scope: Scope,
    *,
    account_id: str | None = None,
    period: str | None = None,
    status: str | None = None,
) -> Select[Invoice]:
    """The invoices ``scope`` sees, filtered, as a query to page by id.

    Args:
        scope: the caller's scope (a reseller or customer sees its own account's invoices).
        account_id: only this account's (None or empty: any).
        period: only this period's (``YYYY-MM``; None or empty: any).
        status: only invoices in this status (None or empty: any).
    """
    stmt = select(Invoice)
    if scope.kind != "all":
        stmt = stmt.where(Invoice.account_id == scope.root_id)
    if account_id:
        stmt = stmt.where(Invoice.account_id == account_id)
    if period:
        stmt = stmt.where(Invoice.period == period)
    if status:
        stmt = stmt.where(Invoice.status == status)
    return stmt


def period_invoices(db: Session, period: str) -> Sequence[Invoice]:
    """Every invoice of ``period`` (``YYYY-MM``), by account."""
    return db.scalars(
        select(Invoice).where(Invoice.period == period).order_by(Invoice.account_id)
    ).all()


def database_now(db: Session) -> datetime:
    """The database's clock now: the close's cut-off, and so a preview's."""
    now = db.scalar(text("SELECT clock_timestamp()"))
    assert isinstance(now, datetime)
    return now
