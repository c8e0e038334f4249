"""Invoice lifecycle: draft → finalized → paid | void; payments and credit notes.

Ledger entries (operator book, the invoice's currency; see invoicing/chart.py):

* finalize: debit ``receivable:invoiced`` (amount due); credit ``receivable:unbilled`` (the
  exact overage), ``receivable:reversals`` (the refund and dispute debts the invoice bills),
  ``tax:payable`` (tax, prepaid lines' included) and ``revenue:rounding`` (either side);
* payment: debit ``cash:<method>``; credit ``receivable:invoiced``;
* payment reversed (card refund, lost dispute): debit ``receivable:invoiced`` (owed again);
  credit ``cash:<method>`` (or ``cash:stripe_disputed``);
* credit note: debit ``revenue:credit-notes`` (net) and ``tax:payable`` (tax); credit
  ``receivable:invoiced`` up to what is still owed and ``customer:prepaid`` with the rest (back
  to the prepaid balance as a paid lot);
* void: debit ``revenue:credit-notes`` (due net), ``tax:payable`` (tax) and
  ``receivable:reversals`` (the refund and dispute debts go back, to be billed again); credit
  ``receivable:invoiced`` (the amount due).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from invoicing.arithmetic import tax_on_share
from invoicing.chart import cash_account, invoicing_house, receivable_invoiced
from invoicing.errors import CreditTooLarge, InvoiceState, PaymentTooLarge
from invoicing.models import (
    BillingProfile,
    CreditNote,
    CreditNoteLine,
    Invoice,
    InvoiceLine,
    InvoicePayment,
)
from invoicing.numbering import next_number
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.errors import IdempotencyConflict, InvalidAmount, NotFound
from ledger.ids import new_id
from ledger.journal import Leg, post_entry
from ledger.locks import lock_idempotency_keys
from ledger.models import JournalEntry
from ledger.units import Unit, currency
from wallet.accounts import lock_accounts
from wallet.burn import BONUS, PAID
from wallet.chart import book_of, customer_ledger, house_ledger, reversal_receivable
from wallet.lots import draw_paid_credit
from wallet.models import Account, CreditLot

PAYMENT_METHODS = ("bank_transfer", "stripe", "other")

#: the line kind that bills refund and dispute debts (``receivable:reversals``)
REVERSAL_DEBT = "reversal_debt"


def _lock(session: Session, invoice_id: str) -> Invoice:
    """Lock the invoice's account row (the wallet's first lock: a credit note may add credit
    and payments move the receivable that the credit limit counts), then the invoice."""
    seen = session.get(Invoice, invoice_id)
    if seen is None:
        raise NotFound(f"invoice {invoice_id} does not exist")
    lock_accounts(session, [seen.account_id], with_parents=False)
    return session.scalars(
        select(Invoice)
        .where(Invoice.id == invoice_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


#: statuses of a finalized invoice that is not void (``disputed``: a payment on it is disputed)
OPEN_STATUSES = ("finalized", "paid", "disputed")


def settle_status(invoice: Invoice, at: datetime) -> None:
    """Set a finalized invoice's status from its settlement: ``disputed`` while a payment on it
    is under an open dispute, else ``paid`` when nothing is owed, else ``finalized``. Void and
    draft invoices are left as they are."""
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
    """Settle the tax of an invoice's prepaid lines (the tax on prepaid consumption) from the
    account's paid credit, when its billing profile says so (``settle_from_prepaid``): as much
    as the paid lots hold (never bonus credit: tax is paid with money), at most what the
    invoice still owes. Due lines (overage, refund debts) are left to be paid.

    Books ``customer:prepaid`` -> ``receivable:invoiced`` and an invoice payment of method
    ``prepaid_balance`` (reference ``prepaid-balance:<invoice id>``: once per invoice). The
    caller holds the account row (finalizing takes it) and the invoice.
    """
    unit = currency(invoice.currency)
    prepaid_tax = int(
        session.scalar(
            select(func.coalesce(func.sum(InvoiceLine.tax), 0)).where(
                InvoiceLine.invoice_id == invoice.id, InvoiceLine.settlement == "prepaid"
            )
        )
        or 0
    )
    wanted = min(prepaid_tax, open_balance(invoice))
    if wanted <= 0:
        return None
    reference = f"prepaid-balance:{invoice.id}"
    if session.scalar(
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
        idempotency_key=_payment_key(PREPAID_METHOD, reference),
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


def _reversal_debt_billed(session: Session, invoice: Invoice) -> int:
    """The exact refund and dispute debts the invoice bills (its ``reversal_debt`` lines)."""
    return int(
        session.scalar(
            select(func.coalesce(func.sum(InvoiceLine.amount_exact), 0)).where(
                InvoiceLine.invoice_id == invoice.id, InvoiceLine.kind == REVERSAL_DEBT
            )
        )
        or 0
    )


def finalize_draft(session: Session, invoice_id: str, *, now: datetime | None = None) -> Invoice:
    """Finalize a draft by id (the invoice's account row locked first, the wallet's lock
    order); an invoice that is already finalized is returned as it is (repeat-safe).

    Raises:
        NotFound: no such invoice.
    """
    invoice = _lock(session, invoice_id)
    if invoice.status == "draft":
        finalize_invoice(session, invoice, now=now)
    return invoice


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """A recorded payment and whether it repeated an earlier one (same method and reference)."""

    payment: InvoicePayment
    replayed: bool


def record_payment(
    session: Session,
    invoice_id: str,
    *,
    amount: Amount,
    method: str,
    reference: str,
    received_at: datetime | None = None,
    metadata: Mapping[str, str] | None = None,
) -> PaymentResult:
    """Mark money received against an invoice (a bank transfer, a card payment...).

    Idempotent per ``(method, reference)``: the same payment recorded again returns the first
    record and changes nothing. The invoice becomes ``paid`` when nothing is left to pay.

    Args:
        metadata: extra keys for the ledger entry's metadata (e.g. the card payment's
            ``payment_intent_id``, which reconciliation matches provider transactions by).

    Raises:
        NotFound: no such invoice.
        InvoiceState: a draft or void invoice.
        PaymentTooLarge: more than the open balance.
        IdempotencyConflict: the reference was used for another invoice or amount.
        InvalidAmount: not a positive whole number of minor units.
    """
    method = method.strip()
    reference = reference.strip()
    if not method or not reference:
        raise InvalidAmount("a payment needs a method and a reference")
    invoice = _lock(session, invoice_id)
    unit = currency(invoice.currency)
    if amount.unit != unit:
        raise InvalidAmount(f"invoice {invoice.id} is in {unit.code}, not {amount.unit.code}")
    if amount.atoms <= 0 or amount.atoms % unit.atoms_per_minor:
        raise InvalidAmount(
            f"a payment is a positive whole number of {unit.code} minor units; got {amount}"
        )
    # One recorder of a reference at a time (after the row locks; the same lock the ledger takes
    # for the entry's idempotency key): a concurrent recorder of the same reference, for any
    # invoice, waits here and then finds the first payment below.
    lock_idempotency_keys(session, [_payment_key(method, reference)])
    prior = session.scalars(
        select(InvoicePayment).where(
            InvoicePayment.method == method, InvoicePayment.reference == reference
        )
    ).one_or_none()
    if prior is not None:
        if prior.invoice_id != invoice.id or prior.amount != amount.atoms:
            raise _reference_taken(prior, method, reference)
        return PaymentResult(prior, True)
    if invoice.status not in OPEN_STATUSES:
        raise InvoiceState(
            f"invoice {invoice.id} is {invoice.status}; only finalized invoices take payments"
        )
    left = open_balance(invoice)
    if amount.atoms > left:
        raise PaymentTooLarge(
            f"invoice {invoice.number} has {Amount(left, unit)} left to pay; cannot take {amount}",
            open_balance=Amount(left, unit).format(),
        )
    at = received_at or utcnow()
    account = session.get_one(Account, invoice.account_id)
    payment_id = new_id("pay")
    entry = post_entry(
        session,
        [
            Leg(cash_account(session, book_of(account), unit, method).id, amount),
            Leg(receivable_invoiced(session, account).id, -amount),
        ],
        description=f"payment {reference} ({method}) of invoice {invoice.number}",
        idempotency_key=_payment_key(method, reference),
        effective_at=at,
        metadata={
            **(metadata or {}),
            "kind": "invoice_payment",
            "invoice_id": invoice.id,
            "account_id": account.id,
        },
    )
    payment = InvoicePayment(
        id=payment_id,
        invoice_id=invoice.id,
        account_id=account.id,
        amount=amount.atoms,
        method=method,
        reference=reference,
        entry_id=entry.id,
        received_at=at,
    )
    try:
        with session.begin_nested():  # a savepoint: a refused insert leaves a usable session
            session.add(payment)
            session.flush()
    except IntegrityError as exc:
        if "uq_invoicing_payments_reference" not in str(exc.orig):
            raise
        # a writer that did not take the reference's lock recorded it first
        taken = session.scalars(
            select(InvoicePayment).where(
                InvoicePayment.method == method, InvoicePayment.reference == reference
            )
        ).one()
        raise _reference_taken(taken, method, reference) from exc
    invoice.amount_paid += amount.atoms
    settle_status(invoice, at)
    session.flush()
    return PaymentResult(payment, False)


def _payment_key(method: str, reference: str) -> str:
    return f"invoice-payment:{method}:{reference}"


def _reference_taken(prior: InvoicePayment, method: str, reference: str) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"payment reference {reference!r} ({method}) was already recorded as {prior.id} for"
        f" invoice {prior.invoice_id}: a reference identifies one payment of one invoice; record"
        " a different payment with its own reference"
    )


def reverse_payment(
    session: Session,
    payment_id: str,
    amount: Amount,
    *,
    key: str,
    reason: str,
    cash_account_id: int | None = None,
    at: datetime | None = None,
    metadata: Mapping[str, str] | None = None,
) -> int | None:
    """Money received against an invoice went back to the payer (a card refund, a lost
    dispute): that much is owed on the invoice again.

    Debits ``receivable:invoiced`` and credits the cash account the payment came into (or
    ``cash_account_id``, e.g. ``cash:stripe_disputed`` for a lost dispute, whose money Stripe
    already withdrew). The payment's ``reversed`` and the invoice's ``amount_paid`` follow; a
    ``paid`` invoice that owes something again is ``finalized`` again (and can be overdue).

    Idempotent per ``key`` (the ledger entry's idempotency key): a repeat changes nothing.

    Returns:
        The ledger entry's id when this call reversed it; None for a repeat.

    Raises:
        NotFound: no such invoice payment.
        InvalidAmount: not a positive whole number of minor units, or more than the part of the
            payment not reversed yet.
    """
    found = session.get(InvoicePayment, payment_id)
    if found is None:
        raise NotFound(f"invoice payment {payment_id} does not exist")
    invoice = _lock(session, found.invoice_id)
    payment = session.scalars(
        select(InvoicePayment)
        .where(InvoicePayment.id == payment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    unit = currency(invoice.currency)
    if amount.unit != unit or amount.atoms <= 0 or amount.atoms % unit.atoms_per_minor:
        raise InvalidAmount(
            f"a reversal of payment {payment_id} is a positive whole number of {unit.code} minor"
            f" units; got {amount}"
        )
    if session.scalar(select(JournalEntry.id).where(JournalEntry.idempotency_key == key)):
        return None
    left = payment.amount - payment.reversed
    if amount.atoms > left:
        raise InvalidAmount(
            f"payment {payment_id} has {Amount(left, unit)} left to reverse;"
            f" cannot reverse {amount}"
        )
    at = at or utcnow()
    account = session.get_one(Account, invoice.account_id)
    cash_id = cash_account_id or cash_account(session, book_of(account), unit, payment.method).id
    entry = post_entry(
        session,
        [Leg(receivable_invoiced(session, account).id, amount), Leg(cash_id, -amount)],
        description=f"payment {payment.reference} ({payment.method}) of invoice"
        f" {invoice.number} reversed: {reason}".strip(": "),
        idempotency_key=key,
        effective_at=at,
        metadata={
            **(metadata or {}),
            "kind": "invoice_payment_reversal",
            "invoice_id": invoice.id,
            "invoice_payment_id": payment.id,
            "account_id": account.id,
        },
    )
    if entry.replayed:
        return None
    payment.reversed += amount.atoms
    invoice.amount_paid -= amount.atoms
    settle_status(invoice, at)
    session.flush()
    return entry.id


def restore_payment(
    session: Session,
    payment_id: str,
    amount: Amount,
    *,
    key: str,
    reason: str,
    at: datetime | None = None,
    metadata: Mapping[str, str] | None = None,
) -> tuple[Amount, int | None]:
    """A reversal of an invoice payment was itself undone (the card refund failed and the money
    came back): record it on the invoice again, up to what the invoice still owes and what was
    reversed (debit the payment's cash account, credit ``receivable:invoiced``).

    Idempotent per ``key``. Returns what was recorded again (the caller decides what the rest
    becomes, e.g. paid credit) and the entry's id (None when nothing was written).

    Raises:
        NotFound: no such invoice payment.
    """
    found = session.get(InvoicePayment, payment_id)
    if found is None:
        raise NotFound(f"invoice payment {payment_id} does not exist")
    invoice = _lock(session, found.invoice_id)
    payment = session.scalars(
        select(InvoicePayment)
        .where(InvoicePayment.id == payment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    unit = currency(invoice.currency)
    if session.scalar(select(JournalEntry.id).where(JournalEntry.idempotency_key == key)):
        return Amount(0, unit), None
    take = min(amount.atoms, payment.reversed, max(open_balance(invoice), 0))
    if take <= 0:
        return Amount(0, unit), None
    at = at or utcnow()
    account = session.get_one(Account, invoice.account_id)
    cash_id = cash_account(session, book_of(account), unit, payment.method).id
    entry = post_entry(
        session,
        [
            Leg(cash_id, Amount(take, unit)),
            Leg(receivable_invoiced(session, account).id, Amount(-take, unit)),
        ],
        description=f"payment {payment.reference} ({payment.method}) of invoice"
        f" {invoice.number} restored: {reason}".strip(": "),
        idempotency_key=key,
        effective_at=at,
        metadata={
            **(metadata or {}),
            "kind": "invoice_payment_restored",
            "invoice_id": invoice.id,
            "invoice_payment_id": payment.id,
            "account_id": account.id,
        },
    )
    payment.reversed -= take
    invoice.amount_paid += take
    settle_status(invoice, at)
    session.flush()
    return Amount(take, unit), entry.id


def mark_disputed(
    session: Session, invoice_id: str, delta: int, *, at: datetime | None = None
) -> Invoice:
    """Add ``delta`` atoms (negative: remove) to what is under open dispute on the invoice and
    set its status (``disputed`` while anything is; then ``paid`` or ``finalized`` again).
    The caller holds the invoice row (the payment paths lock it first)."""
    invoice = session.scalars(
        select(Invoice)
        .where(Invoice.id == invoice_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    invoice.disputed = max(invoice.disputed + delta, 0)
    settle_status(invoice, at or utcnow())
    session.flush()
    return invoice


@dataclass(frozen=True, slots=True)
class CreditRequest:
    """Credit one invoice line (``line_id``) or, without one, the invoice's due part; ``net``
    None credits everything left (of the line or of the due part)."""

    line_id: int | None
    net: Amount | None


@dataclass
class _Item:
    line: InvoiceLine | None
    description: str
    settlement: str
    net: int
    tax: int
    #: the part of ``net`` that was paid with bonus credit and goes back as bonus
    bonus: int = 0


def line_bonus(line: InvoiceLine, unit: Unit) -> int:
    """The part of a prepaid line's (rounded) amount that bonus credit paid, in atoms: the
    line's exact bonus share (``details.from_bonus`` of plan fees and packages, ``details.bonus``
    of usage) applied to its rounded amount, rounded down to the atom."""
    if line.settlement != "prepaid" or line.amount_exact <= 0:
        return 0
    raw = (line.details or {}).get("from_bonus", (line.details or {}).get("bonus"))
    if not raw:
        return 0
    exact_bonus = Amount.parse(str(raw), unit).atoms
    return min(line.amount * exact_bonus // line.amount_exact, line.amount)


def _bonus_expiry(session: Session, invoice: Invoice) -> datetime | None:
    """When bonus given back by a credit note expires: the latest expiry of the account's bonus
    lots that were drawn from (which lot paid which line is not recorded, so the longest
    validity of the bonus that may have paid it, in the customer's favour); None (no expiry)
    when one of them had none or there were none."""
    rows = session.execute(
        select(CreditLot.expires_at).where(
            CreditLot.account_id == invoice.account_id,
            CreditLot.kind == BONUS,
            CreditLot.granted > CreditLot.remaining,
            CreditLot.source_type != "credit_note",
        )
    ).all()
    expiries: list[datetime | None] = [r.expires_at for r in rows]
    if not expiries or any(e is None for e in expiries):
        return None
    return max(e for e in expiries if e is not None)


def _credited_so_far(
    session: Session, invoice: Invoice
) -> tuple[dict[int, tuple[int, int, int]], int, int]:
    """Per line (net, tax, bonus) already credited, and the net and tax of lump credits."""
    per_line: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    lump_net = lump_tax = 0
    rows = session.execute(
        select(
            CreditNoteLine.invoice_line_id,
            CreditNoteLine.net,
            CreditNoteLine.tax,
            CreditNoteLine.to_bonus,
        )
        .join(CreditNote, CreditNote.id == CreditNoteLine.credit_note_id)
        .where(CreditNote.invoice_id == invoice.id)
    ).all()
    for line_id, net, tax, bonus in rows:
        if line_id is None:
            lump_net += net
            lump_tax += tax
        else:
            per_line[line_id][0] += net
            per_line[line_id][1] += tax
            per_line[line_id][2] += bonus
    return {k: (v[0], v[1], v[2]) for k, v in per_line.items()}, lump_net, lump_tax


def issue_credit_note(
    session: Session,
    invoice_id: str,
    *,
    requests: Sequence[CreditRequest],
    reason: str,
    now: datetime | None = None,
) -> CreditNote:
    """Issue a credit note against a finalized (or paid) invoice, numbered in the ``CN`` series.

    Lines are credited with their tax (at the line's rate, on the same share of the line's
    taxable part; crediting what is left of a line credits exactly its remaining tax). What the
    invoice billed (due lines and the tax of prepaid lines) reduces what the customer still owes
    first; anything beyond that (already paid, or paid from the prepaid balance) goes back to
    the prepaid balance as a new paid lot.

    Raises:
        NotFound: no such invoice or line.
        InvoiceState: a draft or void invoice, or an informational line.
        CreditTooLarge: more than is left to credit.
        InvalidAmount: a non-positive amount or one finer than the minor unit.
    """
    if not reason.strip():
        raise InvalidAmount("a credit note needs a reason")
    if not requests:
        raise InvalidAmount("a credit note needs lines or an amount")
    invoice = _lock(session, invoice_id)
    if invoice.status not in OPEN_STATUSES:
        raise InvoiceState(
            f"invoice {invoice.id} is {invoice.status}; credit notes go against finalized invoices"
        )
    unit = currency(invoice.currency)
    lines = {
        line.id: line
        for line in session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id))
    }
    per_line, lump_net, lump_tax = _credited_so_far(session, invoice)
    items: list[_Item] = []
    seen: set[int | None] = set()
    for req in requests:
        if req.line_id in seen:
            raise InvalidAmount(f"line {req.line_id} is named twice; one entry per line")
        seen.add(req.line_id)
        if req.net is not None:
            if req.net.unit != unit:
                raise InvalidAmount(f"invoice {invoice.id} is in {unit.code}")
            if req.net.atoms <= 0 or req.net.atoms % unit.atoms_per_minor:
                raise InvalidAmount(
                    f"credit amounts are positive whole {unit.code} minor units; got {req.net}"
                )
        if req.line_id is None:
            due = [line for line in lines.values() if line.settlement == "due"]
            left_net = (
                sum(line.amount for line in due)
                - lump_net
                - sum(per_line.get(line.id, (0, 0, 0))[0] for line in due)
            )
            left_tax = (
                sum(line.tax for line in due)
                - lump_tax
                - sum(per_line.get(line.id, (0, 0, 0))[1] for line in due)
            )
            net = req.net.atoms if req.net is not None else left_net
            if net <= 0 or net > left_net:
                raise CreditTooLarge(
                    f"invoice {invoice.number} has {Amount(max(left_net, 0), unit)} of billed"
                    f" amounts left to credit; cannot credit {Amount(net, unit)}",
                    creditable=Amount(max(left_net, 0), unit).format(),
                )
            if net == left_net:
                tax = left_tax
            elif invoice.tax_rate_pct is not None:
                tax = tax_on_share(
                    Amount(net, unit),
                    amount=Amount(sum(line.amount for line in due), unit),
                    taxable=Amount(sum(line.taxable for line in due), unit),
                    rate_pct=invoice.tax_rate_pct,
                ).atoms
            else:
                tax = 0
            items.append(_Item(None, "Credit on billed amounts", "due", net, min(tax, left_tax)))
            continue
        line = lines.get(req.line_id)
        if line is None:
            raise NotFound(f"invoice {invoice.id} has no line {req.line_id}")
        if line.settlement == "info":
            raise InvoiceState(
                f"line {line.id} is a statement (nothing was charged for it); it cannot be credited"
            )
        done_net, done_tax, done_bonus = per_line.get(line.id, (0, 0, 0))
        left_net, left_tax = line.amount - done_net, line.tax - done_tax
        left_bonus = max(line_bonus(line, unit) - done_bonus, 0)
        net = req.net.atoms if req.net is not None else left_net
        if net <= 0 or net > left_net:
            raise CreditTooLarge(
                f"line {line.id} has {Amount(max(left_net, 0), unit)} left to credit;"
                f" cannot credit {Amount(net, unit)}",
                creditable=Amount(max(left_net, 0), unit).format(),
            )
        if net == left_net:
            tax = left_tax
        elif line.tax_rate_pct is not None:
            share = tax_on_share(
                Amount(net, unit),
                amount=Amount(line.amount, unit),
                taxable=Amount(line.taxable, unit),
                rate_pct=line.tax_rate_pct,
            )
            tax = min(share.atoms, left_tax)
        else:
            tax = 0
        if net == left_net:
            bonus = left_bonus
        elif line.amount:
            bonus = min(net * line_bonus(line, unit) // line.amount, left_bonus)
        else:
            bonus = 0
        items.append(_Item(line, line.description, line.settlement, net, tax, min(bonus, net)))
    if any(i.line is None for i in items) and any(
        i.line is not None and i.settlement == "due" for i in items
    ):
        raise InvalidAmount("credit either due lines or an amount on the due part, not both")
    net_total = sum(i.net for i in items)
    tax_total = sum(i.tax for i in items)
    total = net_total + tax_total
    # what the invoice billed: due lines with their tax, and the tax of prepaid lines (their net
    # was paid from the prepaid balance and goes back there)
    billed = sum(i.net + i.tax if i.settlement == "due" else i.tax for i in items)
    to_receivable = min(billed, open_balance(invoice))
    to_wallet = total - to_receivable
    # what bonus credit paid goes back as bonus (never as paid money), the rest as paid credit
    to_bonus = sum(i.bonus for i in items)
    to_paid = to_wallet - to_bonus
    at = now or utcnow()
    bonus_expires = _bonus_expiry(session, invoice) if to_bonus else None
    bonus_lapsed = bonus_expires is not None and bonus_expires <= at
    account = session.get_one(Account, invoice.account_id)
    house = invoicing_house(session, book_of(account), unit)
    legs = [Leg(house.credit_notes.id, Amount(net_total, unit))]
    if tax_total:
        legs.append(Leg(house.tax_payable.id, Amount(tax_total, unit)))
    if to_receivable:
        legs.append(Leg(receivable_invoiced(session, account).id, Amount(-to_receivable, unit)))
    cust = customer_ledger(session, account)
    if to_paid:
        legs.append(Leg(cust.prepaid.id, Amount(-to_paid, unit)))
    if to_bonus:
        # a bonus whose validity is over lapses at once: booked as a bonus expiry would be
        target = (
            house_ledger(session, book_of(account), unit).promotions if bonus_lapsed else cust.bonus
        )
        legs.append(Leg(target.id, Amount(-to_bonus, unit)))
    note_id = new_id("cn")
    entry = post_entry(
        session,
        legs,
        description=f"credit note {note_id} on invoice {invoice.number}: {reason}",
        idempotency_key=f"credit-note:{note_id}",
        effective_at=at,
        metadata={
            "kind": "credit_note",
            "credit_note_id": note_id,
            "invoice_id": invoice.id,
            "account_id": account.id,
        },
    )
    lot_id = bonus_lot_id = None
    if to_paid:
        lot = CreditLot(
            account_id=account.id,
            kind=PAID,
            unit=unit.code,
            ledger_account_id=cust.prepaid.id,
            granted=to_paid,
            remaining=to_paid,
            source_type="credit_note",
            source_id=note_id,
        )
        session.add(lot)
        session.flush()
        lot_id = lot.id
    if to_bonus and not bonus_lapsed:
        blot = CreditLot(
            account_id=account.id,
            kind=BONUS,
            unit=unit.code,
            ledger_account_id=cust.bonus.id,
            granted=to_bonus,
            remaining=to_bonus,
            expires_at=bonus_expires,
            source_type="credit_note",
            source_id=note_id,
        )
        session.add(blot)
        session.flush()
        bonus_lot_id = blot.id
    number = next_number(session, "CN", invoice.currency, at)
    note = CreditNote(
        id=note_id,
        number=number.text,
        series=number.series,
        sequence=number.sequence,
        invoice_id=invoice.id,
        account_id=account.id,
        currency=invoice.currency,
        reason=reason.strip(),
        net=net_total,
        tax=tax_total,
        total=total,
        to_receivable=to_receivable,
        to_wallet=to_wallet,
        to_bonus=to_bonus,
        entry_id=entry.id,
        lot_id=lot_id,
        bonus_lot_id=bonus_lot_id,
        issued_at=at,
    )
    session.add(note)
    session.flush()
    session.add_all(
        CreditNoteLine(
            credit_note_id=note.id,
            invoice_line_id=i.line.id if i.line is not None else None,
            description=i.description,
            settlement=i.settlement,
            net=i.net,
            tax=i.tax,
            to_bonus=i.bonus,
        )
        for i in items
    )
    invoice.credited += total
    invoice.credited_receivable += to_receivable
    settle_status(invoice, at)
    session.flush()
    return note


def void_invoice(
    session: Session, invoice_id: str, *, reason: str, now: datetime | None = None
) -> Invoice:
    """Void a finalized invoice nothing was paid or credited on: what it billed is no longer
    owed (written off against ``revenue:credit-notes``, all its tax reversed), except refund and
    dispute debts, which go back to ``receivable:reversals`` for the next invoice (forgive one
    with a credit note on its line). Lines paid from the prepaid balance stay paid; refund those
    with a credit note instead.

    Raises:
        NotFound: no such invoice.
        InvoiceState: not finalized, or payments or credit notes exist.
    """
    invoice = _lock(session, invoice_id)
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
