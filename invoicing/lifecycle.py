"""Invoice lifecycle: draft → finalized → paid | void, and the invoice's status.

Ledger entries (operator book, the invoice's currency; see invoicing/chart.py):

* finalize: debit ``receivable:invoiced`` (amount due); credit ``receivable:unbilled`` (the
  exact overage), ``receivable:reversals`` (the refund and dispute debts the invoice bills),
  ``tax:payable`` (tax, prepaid lines' included) and ``revenue:rounding`` (either side);
* tax on prepaid consumption paid from the prepaid balance (``settle_from_prepaid``): debit
  ``customer:prepaid``; credit ``receivable:invoiced``;
* void: debit ``revenue:credit-notes`` (due net), ``tax:payable`` (tax) and
  ``receivable:reversals`` (the refund and dispute debts go back, to be billed again); credit
  ``receivable:invoiced`` (the amount due).

Payments are in invoicing/invoice_payments.py, credit notes in invoicing/credit_notes.py.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from invoicing.chart import invoicing_house, receivable_invoiced
from invoicing.errors import InvoiceState
from invoicing.lines import REVERSAL_DEBT
from invoicing.models import (
    BillingProfile,
    Invoice,
    InvoiceLine,
    InvoicePayment,
)
from invoicing.numbering import next_number
from ledger.amounts import Amount
from ledger.base import lock_row, utcnow
from ledger.errors import NotFound
from ledger.ids import new_id
from ledger.journal import Leg, post_entry
from ledger.units import currency
from wallet.accounts import lock_accounts
from wallet.ledger_accounts import book_of, customer_ledger, reversal_receivable
from wallet.lots import draw_paid_credit
from wallet.models import Account


def lock_invoice(session: Session, invoice_id: str) -> Invoice:
    """Lock the invoice's account row, then the invoice.

    The wallet's first lock: a credit note may add credit and payments move the receivable that the
    credit limit counts.

    Raises:
        NotFound: no such invoice.
    """
    seen = session.get(Invoice, invoice_id)
    if seen is None:
        raise NotFound(f"invoice {invoice_id} does not exist")
    lock_accounts(session, [seen.account_id], with_parents=False)
    return lock_row(session, Invoice, invoice_id)


#: statuses of a finalized invoice that is not void (``disputed``: a payment on it is disputed)
OPEN_STATUSES = ("finalized", "paid", "disputed")


def settle_status(invoice: Invoice, at: datetime) -> None:
    """Set a finalized invoice's status from its settlement.

    ``disputed`` while a payment on it is under an open dispute, else ``paid`` when nothing is owed,
    else ``finalized``. Void and draft invoices are left as they are.
    """
    if invoice.status not in OPEN_STATUSES:
        return
    if invoice.disputed > 0:
        invoice.status = "disputed"
    elif open_balance(invoice) == 0:
        if invoice.status != "paid":
            invoice.status, invoice.paid_at = "paid", invoice.paid_at or at
    else:
        invoice.status, invoice.paid_at = "finalized", None


def open_balance(invoice: Invoice) -> int:
    """What is still owed on the invoice, in atoms (0 for drafts and void invoices)."""
    if invoice.status not in OPEN_STATUSES:
        return 0
    return invoice.amount_due - invoice.amount_paid - invoice.credited_receivable


def is_overdue(invoice: Invoice, today: date) -> bool:
    """Finalized, not fully paid, and past its due date."""
    return (
        invoice.status == "finalized"
        and open_balance(invoice) > 0
        and invoice.due_date is not None
        and today > invoice.due_date
    )


def finalize_invoice(session: Session, invoice: Invoice, *, now: datetime | None = None) -> Invoice:
    """Finalize a draft: post the ledger entry, set the due date, take the next number.

    The invoice becomes immutable. An invoice with nothing due is settled at once (``paid``).
    Numbering is the last step, so the series row is locked only until the caller commits.

    Raises:
        InvoiceState: the invoice is not a draft.
    """
    if invoice.status != "draft":
        raise InvoiceState(f"invoice {invoice.id} is {invoice.status}, not a draft")
    at = now or utcnow()
    # the wallet's first lock (a no-op for callers that took it): refund and dispute debts move
    lock_accounts(session, [invoice.account_id], with_parents=False)
    account = session.get_one(Account, invoice.account_id)
    unit = currency(invoice.currency)
    reversals = _reversal_debt_billed(session, invoice)
    overage = invoice.exact_due - reversals
    legs: list[Leg] = []
    if invoice.amount_due:
        legs.append(Leg(receivable_invoiced(session, account).id, Amount(invoice.amount_due, unit)))
    if overage:
        unbilled = customer_ledger(session, account).receivable_unbilled
        legs.append(Leg(unbilled.id, Amount(-overage, unit)))
    if reversals:
        owed = reversal_receivable(session, account)
        legs.append(Leg(owed.id, Amount(-reversals, unit)))
    house = invoicing_house(session, book_of(account), unit)
    if invoice.tax:
        legs.append(Leg(house.tax_payable.id, Amount(-invoice.tax, unit)))
    if invoice.rounding:
        legs.append(Leg(house.rounding.id, Amount(-invoice.rounding, unit)))
    if legs:
        entry = post_entry(
            session,
            legs,
            description=f"invoice {invoice.id} for {invoice.period} finalized",
            idempotency_key=f"invoice-finalize:{invoice.id}",
            effective_at=at,
            metadata={"kind": "invoice", "invoice_id": invoice.id, "account_id": account.id},
        )
        invoice.finalize_entry_id = entry.id
    invoice.issued_at = at
    invoice.due_date = at.date() + timedelta(days=invoice.net_terms_days)
    if invoice.amount_due == 0:
        invoice.status, invoice.paid_at = "paid", at
    else:
        invoice.status = "finalized"
    number = next_number(session, "INV", invoice.currency, at)
    invoice.series, invoice.sequence, invoice.number = number.series, number.sequence, number.text
    session.flush()
    profile = session.get(BillingProfile, account.id)
    if profile is not None and profile.settle_from_prepaid:
        pay_from_prepaid(session, invoice, account, at=at)
    return invoice


#: the payment method of invoices settled from the customer's paid credit
PREPAID_METHOD = "prepaid_balance"


def pay_from_prepaid(
    session: Session, invoice: Invoice, account: Account, *, at: datetime
) -> InvoicePayment | None:
    """Settle the tax of an invoice's prepaid lines from the account's paid credit.

    Only when its billing profile says so (``settle_from_prepaid``): as much as the paid lots hold
    (never bonus credit: tax is paid with money), at most what the invoice still owes. Due lines
    (overage, refund debts) are left to be paid.

    Books ``customer:prepaid`` -> ``receivable:invoiced`` and an invoice payment of method
    ``prepaid_balance`` (reference ``prepaid-balance:<invoice id>``: once per invoice). The
    caller holds the account row (finalizing takes it) and the invoice.
    """
    unit = currency(invoice.currency)
    wanted = min(
        _lines_sum(session, invoice, InvoiceLine.tax, settlement="prepaid"), open_balance(invoice)
    )
    reference = f"prepaid-balance:{invoice.id}"
    if wanted <= 0 or session.scalar(
        select(InvoicePayment.id).where(
            InvoicePayment.method == PREPAID_METHOD, InvoicePayment.reference == reference
        )
    ):
        return None
    taken = draw_paid_credit(session, account, Amount(wanted, unit), at=at)
    if not taken.legs:
        return None
    amount = taken.legs[0].amount
    entry = post_entry(
        session,
        [*taken.legs, Leg(receivable_invoiced(session, account).id, -amount)],
        description=f"invoice {invoice.number}: tax on prepaid consumption paid from the"
        " prepaid balance",
        idempotency_key=payment_key(PREPAID_METHOD, reference),
        effective_at=at,
        metadata={
            "kind": "invoice_paid_from_prepaid",
            "invoice_id": invoice.id,
            "account_id": account.id,
            "lots": [[lot_id, take] for lot_id, take in taken.taken],
        },
    )
    payment = InvoicePayment(
        id=new_id("pay"),
        invoice_id=invoice.id,
        account_id=account.id,
        amount=amount.atoms,
        method=PREPAID_METHOD,
        reference=reference,
        entry_id=entry.id,
        received_at=at,
    )
    session.add(payment)
    invoice.amount_paid += amount.atoms
    settle_status(invoice, at)
    session.flush()
    return payment


def payment_key(method: str, reference: str) -> str:
    """The idempotency key of an invoice payment's ledger entry (one per method and reference)."""
    return f"invoice-payment:{method}:{reference}"


def _reversal_debt_billed(session: Session, invoice: Invoice) -> int:
    """The exact refund and dispute debts the invoice bills (its ``reversal_debt`` lines)."""
    return _lines_sum(session, invoice, InvoiceLine.amount_exact, kind=REVERSAL_DEBT)


def _lines_sum(
    session: Session, invoice: Invoice, column: Any, *, settlement: str = "", kind: str = ""
) -> int:
    """The sum of ``column`` over the invoice's lines (of one settlement or kind when given)."""
    query = select(func.coalesce(func.sum(column), 0)).where(InvoiceLine.invoice_id == invoice.id)
    if settlement:
        query = query.where(InvoiceLine.settlement == settlement)
    if kind:
        query = query.where(InvoiceLine.kind == kind)
    return int(session.scalar(query) or 0)


def finalize_draft(session: Session, invoice_id: str, *, now: datetime | None = None) -> Invoice:
    """Finalize a draft by id (the invoice's account row locked first, the wallet's lock order).

    An invoice that is already finalized is returned as it is (repeat-safe).

    Raises:
        NotFound: no such invoice.
    """
    invoice = lock_invoice(session, invoice_id)
    if invoice.status == "draft":
        finalize_invoice(session, invoice, now=now)
    return invoice


def void_invoice(
    session: Session, invoice_id: str, *, reason: str, now: datetime | None = None
) -> Invoice:
    """Void a finalized invoice nothing was paid or credited on.

    What it billed is no longer owed (written off against ``revenue:credit-notes``, all its tax
    reversed), except refund and dispute debts, which go back to ``receivable:reversals`` for the
    next invoice (forgive one with a credit note on its line). Lines paid from the prepaid balance
    stay paid; refund those with a credit note instead.

    Raises:
        NotFound: no such invoice.
        InvoiceState: not finalized, or payments or credit notes exist.
    """
    invoice = lock_invoice(session, invoice_id)
    if invoice.status == "void":
        return invoice
    if invoice.status != "finalized" or invoice.amount_paid or invoice.credited:
        raise InvoiceState(
            f"invoice {invoice.id} is {invoice.status} with {invoice.amount_paid} atoms paid and"
            f" {invoice.credited} credited; only finalized invoices without payments or credit"
            " notes can be voided (issue a credit note instead)"
        )
    unit = currency(invoice.currency)
    at = now or utcnow()
    account = session.get_one(Account, invoice.account_id)
    house = invoicing_house(session, book_of(account), unit)
    reversals = _reversal_debt_billed(session, invoice)
    net = invoice.amount_due - invoice.tax - reversals
    legs = [Leg(receivable_invoiced(session, account).id, Amount(-invoice.amount_due, unit))]
    if reversals:  # still owed: back where the next invoice bills it from
        legs.append(Leg(reversal_receivable(session, account).id, Amount(reversals, unit)))
    if net:
        legs.append(Leg(house.credit_notes.id, Amount(net, unit)))
    if invoice.tax:
        legs.append(Leg(house.tax_payable.id, Amount(invoice.tax, unit)))
    entry = post_entry(
        session,
        legs,
        description=f"invoice {invoice.number} voided: {reason}".strip(": "),
        idempotency_key=f"invoice-void:{invoice.id}",
        effective_at=at,
        metadata={"kind": "invoice_void", "invoice_id": invoice.id, "account_id": account.id},
    )
    invoice.status, invoice.voided_at, invoice.void_entry_id = "void", at, entry.id
    session.flush()
    return invoice
