"""Invoice documents: a Jinja2 HTML template rendered to PDF by WeasyPrint.

Text is set in WenQuanYi Micro Hei when it is installed (``make install`` installs Debian's
``fonts-wqy-microhei``), so Chinese, Japanese and Korean names render; DejaVu Sans otherwise.
Money is printed in the invoice's currency with its minor unit and symbol (invoicing/formatting).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session

from invoicing.formatting import format_money
from invoicing.lifecycle import is_overdue, open_balance
from invoicing.models import CreditNote, Invoice, InvoiceLine
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.decimals import format_pct as _rate
from ledger.units import currency


@dataclass(frozen=True, slots=True)
class Issuer:
    """Who issues the invoices (the operator), printed in the header."""

    name: str = "tokenwallet operator"
    address: str | None = None
    tax_id: str | None = None


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(
        loader=PackageLoader("invoicing", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
    )


def _line_rows(
    lines: Sequence[InvoiceLine], money: Callable[[int], str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The invoice's lines as the template's three tables.

    Charged lines, the usage statement (paid by packages and plan quota only) and the failed-request
    credits.
    """
    charged, statement, credits = [], [], []
    for line in lines:
        row: dict[str, Any] = {
            "description": line.description,
            "requests": f"{line.requests:,}",
            "tokens": f"{line.tokens:,}",
            "amount": money(line.amount),
        }
        if line.settlement == "info" and line.kind == "failed_request_credit":
            credits.append(row)
        elif line.settlement == "info":
            row["package_tokens"] = f"{int(line.details.get('package_tokens', 0)):,}"
            row["plan_requests"] = f"{int(line.details.get('plan_requests', 0)):,}"
            statement.append(row)
        else:
            row["tax"] = money(line.tax)
            row["rate"] = _rate(line.tax_rate_pct)
            # a line partly paid with bonus credit is taxed on the part paid with money
            row["base"] = (
                money(line.taxable)
                if line.tax_rate_pct is not None and line.taxable != line.amount
                else None
            )
            row["settled"] = "prepaid balance" if line.settlement == "prepaid" else "due"
            charged.append(row)
    return charged, statement, credits


def _totals(invoice: Invoice, money: Callable[..., str]) -> dict[str, Any]:
    """The invoice's totals and settlement, formatted."""
    return {
        "subtotal": money(invoice.subtotal),
        "tax": money(invoice.tax),
        "total": money(invoice.total),
        "prepaid_applied": money(invoice.prepaid_applied),
        "show_prepaid": bool(invoice.prepaid_applied),
        "amount_due": money(invoice.amount_due, code=True),
        "show_settlement": bool(invoice.amount_paid or invoice.credited),
        "paid": money(invoice.amount_paid),
        "credited": money(invoice.credited_receivable),
        "balance": money(open_balance(invoice), code=True),
    }


def invoice_context(
    session: Session, invoice: Invoice, *, issuer: Issuer, today: date | None = None
) -> dict[str, Any]:
    """What the template shows: every amount already formatted for people."""
    unit = currency(invoice.currency)

    def money(atoms: int, *, code: bool = False) -> str:
        return format_money(Amount(atoms, unit), code=code)

    lines = session.scalars(
        select(InvoiceLine)
        .where(InvoiceLine.invoice_id == invoice.id)
        .order_by(InvoiceLine.position)
    ).all()
    charged, statement, credits = _line_rows(lines, money)
    notes = session.scalars(
        select(CreditNote).where(CreditNote.invoice_id == invoice.id).order_by(CreditNote.number)
    ).all()
    draft = invoice.status == "draft"
    title = "Invoice" if not draft else "Draft invoice"
    return {
        "title": f"{title} {invoice.number}" if invoice.number else title,
        "draft": draft,
        "number": invoice.number or "(assigned when finalized)",
        "period": invoice.period,
        "period_from": invoice.period_start.date().isoformat(),
        "period_to": (invoice.period_end - timedelta(days=1)).date().isoformat(),
        "issued": invoice.issued_at.date().isoformat() if invoice.issued_at else "-",
        "due": invoice.due_date.isoformat() if invoice.due_date else "-",
        "net_terms": invoice.net_terms_days,
        "status": invoice.status,
        "overdue": is_overdue(invoice, today or utcnow().date()),
        "currency": unit.code,
        "issuer": issuer,
        "bill_to": invoice.bill_to,
        "tax_rate": _rate(invoice.tax_rate_pct),
        "charged": charged,
        "statement": statement,
        "credits": credits,
        "credit_notes": [
            {
                "number": n.number,
                "date": n.issued_at.date().isoformat(),
                "reason": n.reason,
                "total": money(n.total),
            }
            for n in notes
        ],
        "totals": _totals(invoice, money),
        "cutoff": invoice.usage_cutoff_at.isoformat(timespec="seconds"),
    }


def render_invoice_html(
    session: Session, invoice: Invoice, *, issuer: Issuer, today: date | None = None
) -> str:
    """The invoice as an HTML document."""
    context = invoice_context(session, invoice, issuer=issuer, today=today)
    return _env().get_template("invoice.html.j2").render(**context)


def render_invoice_pdf(
    session: Session, invoice: Invoice, *, issuer: Issuer, today: date | None = None
) -> bytes:
    """The invoice as a PDF (WeasyPrint)."""
    from weasyprint import HTML

    html = render_invoice_html(session, invoice, issuer=issuer, today=today)
    pdf: bytes = HTML(string=html).write_pdf()
    return pdf
