"""Read queries of an invoice's parts: its lines, credit notes and payments, in document order."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from invoicing.models import CreditNote, InvoiceLine, InvoicePayment


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
