"""Invoices (JSON and PDF), their credit notes and payments.

Closing a month is in ``billing_periods.py``, tax profiles and accounts' billing fields in
``billing_profiles.py``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import PermissionDeniedException
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.deps import now_of
from api.idempotency import Reply, idempotent_post
from api.openapi import CARD_STARTED, only, returns
from api.paging import keyset
from api.payments import checkout_urls, require_gateway
from api.routes.payments import PaymentOut as CardPaymentOut
from api.routes.payments import ReturnUrl
from api.routes.payments import payment_out as card_payment_out
from api.schemas import DecimalString, IdempotencyKey, Limit, Money, Page, scope_of
from invoicing.credit_notes import CreditRequest, issue_credit_note
from invoicing.documents import Issuer, render_invoice_pdf
from invoicing.invoice_payments import record_payment
from invoicing.lifecycle import finalize_draft, is_overdue, open_balance, void_invoice
from invoicing.models import CreditNote, Invoice, InvoiceLine, InvoicePayment
from invoicing.payments.checkout import start_invoice_payment
from invoicing.periods import Period
from invoicing.queries import (
    invoice_credit_notes,
    invoice_lines,
    invoice_payments,
    invoices_query,
)
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.decimals import format_pct as _pct
from ledger.errors import NotFound
from ledger.units import Unit, currency
from wallet.accounts import get_account

# -- invoices --------------------------------------------------------------------------------


class LineOut(BaseModel):
    """A line of an invoice or of its preview (fields as in ``InvoiceLineOut``)."""

    position: int
    kind: str
    description: str
    model: str | None
    source_period: str | None
    requests: int
    tokens: int
    settlement: str
    amount: Money
    amount_exact: Money
    tax: Money
    tax_rate_pct: str | None
    taxable: Money
    details: dict[str, Any]


class _LineId(BaseModel):
    id: int


# pydantic orders a model's fields from its last base to its first, then its own
class InvoiceLineOut(LineOut, _LineId):
    """A line: ``due``, ``prepaid`` (paid from the prepaid balance) or ``info`` (statement).

    Billed. ``amount`` is rounded once to the minor unit; ``amount_exact`` is the ledger's. ``tax``
    is ``taxable`` (the part paid with money, not bonus credit) at ``tax_rate_pct``.
    """

    source_period: str | None = Field(description="for late usage: the month it occurred in")


class TotalsOut(BaseModel):
    """``amount_due = total - prepaid_applied``.

    ``balance_due`` is what is still owed; ``disputed`` the part of its payments under an open
    dispute (status ``disputed``).
    """

    subtotal: Money
    tax: Money
    total: Money
    prepaid_applied: Money
    amount_due: Money
    amount_paid: Money
    credited: Money
    balance_due: Money
    rounding: Money
    disputed: Money


class CreditNoteOut(BaseModel):
    """A credit note against an invoice."""

    id: str
    number: str
    invoice_id: str
    reason: str
    net: Money
    tax: Money
    total: Money
    to_receivable: Money
    to_wallet: Money
    to_bonus: Money = Field(description="of to_wallet, what went back as bonus credit")
    issued_at: datetime


class PaymentOut(BaseModel):
    """Money received against an invoice.

    ``reversed``: the part that went back (a card refund or a lost dispute), owed on the invoice
    again.
    """

    id: str
    invoice_id: str
    amount: Money
    method: str
    reference: str
    received_at: datetime
    reversed: Money


class InvoiceOut(BaseModel):
    """An invoice with its lines, totals, credit notes and payments."""

    id: str
    number: str | None
    account_id: str
    period: str
    currency: str
    status: str
    overdue: bool
    issued_at: datetime | None
    due_date: date | None
    net_terms_days: int
    tax_rate_pct: str | None
    bill_to: dict[str, Any]
    usage_cutoff_at: datetime
    previous_cutoff_at: datetime | None
    totals: TotalsOut
    lines: list[InvoiceLineOut] = []
    credit_notes: list[CreditNoteOut] = []
    payments: list[PaymentOut] = []


def credit_note_out(n: CreditNote) -> CreditNoteOut:
    """Wire form of a credit note."""
    unit = currency(n.currency)
    return CreditNoteOut(
        id=n.id,
        number=n.number,
        invoice_id=n.invoice_id,
        reason=n.reason,
        net=Money.atoms(n.net, unit),
        tax=Money.atoms(n.tax, unit),
        total=Money.atoms(n.total, unit),
        to_receivable=Money.atoms(n.to_receivable, unit),
        to_wallet=Money.atoms(n.to_wallet, unit),
        to_bonus=Money.atoms(n.to_bonus, unit),
        issued_at=n.issued_at,
    )


def payment_out(p: InvoicePayment, unit: Unit) -> PaymentOut:
    """Wire form of a payment."""
    return PaymentOut(
        id=p.id,
        invoice_id=p.invoice_id,
        amount=Money.atoms(p.amount, unit),
        method=p.method,
        reference=p.reference,
        received_at=p.received_at,
        reversed=Money.atoms(p.reversed, unit),
    )


def invoice_out(db: Session, inv: Invoice, *, today: date, full: bool = True) -> InvoiceOut:
    """Wire form of an invoice (with lines, credit notes and payments when ``full``)."""
    unit = currency(inv.currency)
    out = InvoiceOut(
        id=inv.id,
        number=inv.number,
        account_id=inv.account_id,
        period=inv.period,
        currency=inv.currency,
        status=inv.status,
        overdue=is_overdue(inv, today),
        issued_at=inv.issued_at,
        due_date=inv.due_date,
        net_terms_days=inv.net_terms_days,
        tax_rate_pct=_pct(inv.tax_rate_pct),
        bill_to=inv.bill_to,
        usage_cutoff_at=inv.usage_cutoff_at,
        previous_cutoff_at=inv.previous_cutoff_at,
        totals=_totals_out(inv, unit),
    )
    if full:
        out.lines = [_line_out(ln, unit) for ln in invoice_lines(db, inv.id)]
        out.credit_notes = [credit_note_out(n) for n in invoice_credit_notes(db, inv.id)]
        out.payments = [payment_out(p, unit) for p in invoice_payments(db, inv.id)]
    return out


def _totals_out(inv: Invoice, unit: Unit) -> TotalsOut:
    """An invoice's totals, paid, credited and disputed amounts and what is still due."""
    return TotalsOut(
        subtotal=Money.atoms(inv.subtotal, unit),
        tax=Money.atoms(inv.tax, unit),
        total=Money.atoms(inv.total, unit),
        prepaid_applied=Money.atoms(inv.prepaid_applied, unit),
        amount_due=Money.atoms(inv.amount_due, unit),
        amount_paid=Money.atoms(inv.amount_paid, unit),
        credited=Money.atoms(inv.credited, unit),
        balance_due=Money.atoms(open_balance(inv), unit),
        rounding=Money.atoms(inv.rounding, unit),
        disputed=Money.atoms(inv.disputed, unit),
    )


def _line_out(ln: InvoiceLine, unit: Unit) -> InvoiceLineOut:
    """Wire form of an invoice line."""
    return InvoiceLineOut(
        id=ln.id,
        position=ln.position,
        kind=ln.kind,
        description=ln.description,
        model=ln.model,
        source_period=ln.source_period,
        requests=ln.requests,
        tokens=ln.tokens,
        settlement=ln.settlement,
        amount=Money.atoms(ln.amount, unit),
        amount_exact=Money.atoms(ln.amount_exact, unit),
        tax=Money.atoms(ln.tax, unit),
        tax_rate_pct=_pct(ln.tax_rate_pct),
        taxable=Money.atoms(ln.taxable, unit),
        details=ln.details,
    )


def today_of(state: State) -> date:
    """Today in UTC by the app's clock (what invoices' ``overdue`` is computed against)."""
    return (now_of(state) or utcnow()).date()


def visible_invoice(db: Session, invoice_id: str, principal: Principal) -> Invoice:
    """An invoice of an account the caller may see (others are 404)."""
    inv = db.get(Invoice, invoice_id)
    if inv is None:
        raise NotFound(f"invoice {invoice_id} does not exist")
    get_account(db, inv.account_id, scope=scope_of(principal))
    return inv


class CreditLineIn(BaseModel):
    """Credit an invoice line, all that is left of it or ``amount`` (net, before tax)."""

    model_config = ConfigDict(extra="forbid")
    line_id: int
    amount: DecimalString | None = None


class CreditNoteIn(BaseModel):
    """Either ``lines`` or ``amount`` (net, on the invoice's billed part), and a reason."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [only("lines", "amount"), only("amount", "lines")]},
    )
    lines: list[CreditLineIn] | None = Field(default=None, min_length=1, max_length=200)
    amount: DecimalString | None = None
    reason: str = Field(min_length=1, max_length=500)

    @model_validator(mode="after")
    def _one_of(self) -> CreditNoteIn:
        if (self.lines is None) == (self.amount is None):
            raise ValueError("send either lines or amount")
        return self


class PaymentIn(BaseModel):
    """Money received against an invoice, or ``stripe``: start paying the invoice by card.

    ``bank_transfer``, ``other``: finance records it; idempotent per ``method`` and ``reference``. A
    card payment is for what is still owed (or ``amount``, a part of it); the answer (202) carries
    ``checkout_url``, Stripe's hosted payment page, and the payment is recorded on the invoice when
    Stripe confirms it. ``success_url``/``cancel_url`` override the configured return pages.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {
                    "title": "card payment",
                    "required": ["method"],
                    "properties": {
                        "method": {"const": "stripe"},
                        "reference": {"type": "null"},
                        "received_at": {"type": "null"},
                    },
                },
                {
                    "title": "money received",
                    "required": ["amount", "reference"],
                    "properties": {
                        "method": {"enum": ["bank_transfer", "other"]},
                        "amount": {"type": "string"},
                        "reference": {"type": "string"},
                        "success_url": {"type": "null"},
                        "cancel_url": {"type": "null"},
                    },
                },
            ]
        },
    )
    amount: DecimalString | None = None
    method: Literal["bank_transfer", "stripe", "other"] = "bank_transfer"
    reference: str | None = Field(default=None, min_length=1, max_length=200)
    received_at: AwareDatetime | None = None
    success_url: ReturnUrl = None
    cancel_url: ReturnUrl = None

    @model_validator(mode="after")
    def _fields_of_method(self) -> PaymentIn:
        if self.method == "stripe":
            if self.reference is not None or self.received_at is not None:
                raise ValueError(
                    "a card payment (method stripe) is recorded when Stripe confirms it: send no"
                    " reference or received_at (to record a card payment received elsewhere, use"
                    " method other)"
                )
        else:
            missing = [f for f in ("amount", "reference") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"method {self.method} needs {' and '.join(missing)}")
            if self.success_url is not None or self.cancel_url is not None:
                raise ValueError("success_url and cancel_url are for card payments (stripe)")
        return self


class VoidIn(BaseModel):
    """Why the invoice is voided."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500)


def _check_payment(
    invoice_id: str, data: PaymentIn, db: Session, principal: Principal, state: State
) -> None:
    """Refuse an invoice payment before its key is looked at (a replay is refused again).

    Args:
        invoice_id: the invoice to pay.
        data: the payment.
        db: the request's session.
        principal: the caller.
        state: the app's state (its payment gateway).

    Raises:
        NotFound: a card payment of an invoice the caller may not see.
        PaymentsNotConfigured: a card payment in a deployment without Stripe keys.
        PermissionDeniedException: a payment by other means than card, by another role than
            finance (403).
    """
    if data.method == "stripe":
        visible_invoice(db, invoice_id, principal)  # 404 before anything else for others
        require_gateway(state.payments)
    elif not principal.has_role("finance"):
        raise PermissionDeniedException(
            f"a {principal.role} key may not record {data.method} payments (allowed: admin,"
            " finance); pay by card with method stripe"
        )


class InvoicesController(Controller):
    """``/v1/invoices``: finance sees every invoice; resellers and customers their own."""

    path = "/v1/invoices"
    tags = ["month end"]

    @get("/", sync_to_thread=True, guards=[requires("finance", "reseller", "customer")])
    def list_invoices(
        self,
        db: Session,
        principal: Principal,
        state: State,
        account_id: str | None = None,
        period: str | None = None,
        status: str | None = None,
        limit: Limit = 20,
        starting_after: str | None = None,
    ) -> Page[InvoiceOut]:
        """Invoices by id (oldest first), filtered by account, period and status."""
        stmt = invoices_query(
            scope_of(principal),
            account_id=account_id,
            period=str(Period.parse(period)) if period else None,
            status=status,
        )
        rows = db.scalars(keyset(stmt, Invoice.id, starting_after, limit)).all()
        today = today_of(state)
        return Page[InvoiceOut].of(rows, limit, lambda i: invoice_out(db, i, today=today))

    @get(
        "/{invoice_id:str}",
        sync_to_thread=True,
        guards=[requires("finance", "reseller", "customer")],
    )
    def get_one(
        self, invoice_id: str, db: Session, principal: Principal, state: State
    ) -> InvoiceOut:
        """An invoice: lines, totals, number, due date, status, credit notes, payments."""
        return invoice_out(db, visible_invoice(db, invoice_id, principal), today=today_of(state))

    @get(
        "/{invoice_id:str}/pdf",
        sync_to_thread=True,
        guards=[requires("finance", "reseller", "customer")],
        media_type="application/pdf",
    )
    def pdf(
        self, invoice_id: str, db: Session, principal: Principal, state: State
    ) -> Response[bytes]:
        """The invoice as a PDF document in the account's currency."""
        inv = visible_invoice(db, invoice_id, principal)
        cfg = state.settings
        issuer = Issuer(
            name=cfg.tokenwallet_invoice_issuer_name,
            address=cfg.tokenwallet_invoice_issuer_address,
            tax_id=cfg.tokenwallet_invoice_issuer_tax_id,
        )
        content = render_invoice_pdf(db, inv, issuer=issuer, today=today_of(state))
        name = inv.number or f"draft-{inv.id}"
        return Response(
            content,
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="{name}.pdf"'},
        )

    @idempotent_post(
        "/{invoice_id:str}/finalize",
        status_code=200,
        guards=[requires("finance")],
    )
    def finalize(
        self,
        request: Request[Any, Any, Any],
        invoice_id: str,
        db: Session,
        state: State,
        idempotency_key: IdempotencyKey = None,
    ) -> InvoiceOut:
        """Finalize a draft: number it, post it, set its due date (repeat-safe)."""
        inv = finalize_draft(db, invoice_id, now=now_of(state))  # account row locked first
        return invoice_out(db, inv, today=today_of(state))

    @idempotent_post(
        "/{invoice_id:str}/void",
        status_code=200,
        guards=[requires("finance")],
    )
    def void(
        self,
        request: Request[Any, Any, Any],
        invoice_id: str,
        data: VoidIn,
        db: Session,
        state: State,
        idempotency_key: IdempotencyKey = None,
    ) -> InvoiceOut:
        """Void a finalized invoice with no payments or credit notes (repeat-safe)."""
        inv = void_invoice(db, invoice_id, reason=data.reason, now=now_of(state))
        return invoice_out(db, inv, today=today_of(state))

    @idempotent_post("/{invoice_id:str}/credit-notes", guards=[requires("finance")])
    def credit_note(
        self,
        invoice_id: str,
        request: Request[Principal, Principal, State],
        data: CreditNoteIn,
        db: Session,
        state: State,
        idempotency_key: IdempotencyKey = None,
    ) -> CreditNoteOut:
        """Issue a credit note against a finalized invoice (numbered in the CN series)."""
        inv = db.get(Invoice, invoice_id)
        if inv is None:
            raise NotFound(f"invoice {invoice_id} does not exist")
        unit = currency(inv.currency)
        if data.lines is not None:
            reqs = [
                CreditRequest(ln.line_id, Amount.parse(ln.amount, unit) if ln.amount else None)
                for ln in data.lines
            ]
        else:
            assert data.amount is not None
            reqs = [CreditRequest(None, Amount.parse(data.amount, unit))]
        note = issue_credit_note(
            db, invoice_id, requests=reqs, reason=data.reason, now=now_of(state)
        )
        return credit_note_out(note)

    @idempotent_post(
        "/{invoice_id:str}/payments",
        guards=[requires("finance", "reseller", "customer")],
        responses={**returns(PaymentOut, 201), **returns(CardPaymentOut, 202, CARD_STARTED)},
        check=_check_payment,
    )
    def payment(
        self,
        invoice_id: str,
        request: Request[Principal, Principal, State],
        data: PaymentIn,
        db: Session,
        principal: Principal,
        state: State,
        idempotency_key: IdempotencyKey = None,
    ) -> PaymentOut | Reply:
        """Record a payment, or start paying by card.

        ``bank_transfer``, ``other``: finance; the same reference again changes nothing. ``stripe``:
        finance, or the invoice's own customer or reseller; only a finalized invoice with something
        owed; 202 with the checkout URL.
        """
        if data.method == "stripe":
            started = start_invoice_payment(
                db,
                require_gateway(state.payments),
                invoice_id,
                urls=checkout_urls(state.settings, data.success_url, data.cancel_url),
                amount=data.amount,
                scope=scope_of(principal),
                now=now_of(state),
            )
            return Reply(card_payment_out(db, started.payment), 202)
        inv = db.get(Invoice, invoice_id)
        if inv is None:
            raise NotFound(f"invoice {invoice_id} does not exist")
        unit = currency(inv.currency)
        assert data.amount is not None and data.reference is not None  # the validator
        result = record_payment(
            db,
            invoice_id,
            amount=Amount.parse(data.amount, unit),
            method=data.method,
            reference=data.reference,
            received_at=data.received_at or now_of(state),
        )
        return payment_out(result.payment, unit)
