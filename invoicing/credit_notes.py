"""Credit notes: credit invoice lines (or the due part) with their tax, numbered ``CN``.

Ledger entry (operator book, the invoice's currency): debit ``revenue:credit-notes`` (net) and
``tax:payable`` (tax); credit ``receivable:invoiced`` up to what is still owed and
``customer:prepaid`` with the rest (a new paid lot), ``customer:bonus`` with what bonus credit
paid (a new bonus lot; ``revenue:promotions`` when that bonus has lapsed already). The
arithmetic is in invoicing/credits.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from invoicing.chart import invoicing_house, receivable_invoiced
from invoicing.credits import (
    Credit,
    Creditable,
    CreditSplit,
    bonus_share,
    check_credit_amount,
    credit_of,
    split_credit,
)
from invoicing.errors import InvoiceState
from invoicing.lifecycle import OPEN_STATUSES, lock_invoice, open_balance, settle_status
from invoicing.models import CreditNote, CreditNoteLine, Invoice, InvoiceLine
from invoicing.numbering import next_number
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.errors import InvalidAmount, NotFound
from ledger.ids import new_id
from ledger.journal import Leg, post_entry
from ledger.units import Unit, currency
from wallet.burn_order import BONUS, PAID
from wallet.ledger_accounts import book_of, customer_ledger, house_ledger
from wallet.models import Account, CreditLot


@dataclass(frozen=True, slots=True)
class CreditRequest:
    """Credit one invoice line (``line_id``) or, without one, the invoice's due part.

    ``net`` None credits everything left (of the line or of the due part).
    """

    line_id: int | None
    net: Amount | None


@dataclass(frozen=True, slots=True)
class _Item:
    """One credited line (``line`` None: the due part as a whole) and its credit."""

    line: InvoiceLine | None
    description: str
    settlement: str
    credit: Credit


def line_bonus(line: InvoiceLine, unit: Unit) -> int:
    """The part of a prepaid line's (rounded) amount that bonus credit paid, in atoms.

    The line's exact bonus share (``details.from_bonus`` of plan fees and packages,
    ``details.bonus`` of usage) applied to its rounded amount, rounded down to the atom.
    """
    if line.settlement != "prepaid":
        return 0
    raw = (line.details or {}).get("from_bonus", (line.details or {}).get("bonus"))
    if not raw or line.amount_exact <= 0:
        return 0
    return bonus_share(line.amount, line.amount_exact, Amount.parse(str(raw), unit).atoms)


def _bonus_expiry(session: Session, invoice: Invoice) -> datetime | None:
    """When bonus given back by a credit note expires.

    The latest expiry of the account's bonus lots that were drawn from (which lot paid which line is
    not recorded, so the longest validity of the bonus that may have paid it, in the customer's
    favour); None (no expiry) when one of them had none or there were none.
    """
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


@dataclass(frozen=True, slots=True)
class _Credited:
    """What earlier credit notes credited: per line, and as lump credits on the due part."""

    per_line: dict[int, Credit]
    lump: Credit

    def of(self, line_id: int) -> Credit:
        """What was credited of one line."""
        return self.per_line.get(line_id, Credit(0, 0, 0))


def _credited_so_far(session: Session, invoice: Invoice) -> _Credited:
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
    return _Credited({k: Credit(*v) for k, v in per_line.items()}, Credit(lump_net, lump_tax))


def _due_part(invoice: Invoice, lines: Sequence[InvoiceLine], credited: _Credited) -> Creditable:
    """The invoice's due lines as one creditable: lump credits and line credits taken off."""
    due = [line for line in lines if line.settlement == "due"]
    done = Credit(
        credited.lump.net + sum(credited.of(line.id).net for line in due),
        credited.lump.tax + sum(credited.of(line.id).tax for line in due),
    )
    return Creditable(
        amount=sum(line.amount for line in due),
        taxable=sum(line.taxable for line in due),
        rate_pct=invoice.tax_rate_pct,
        tax=sum(line.tax for line in due),
        done=done,
    )


def _line_part(line: InvoiceLine, unit: Unit, credited: _Credited) -> Creditable:
    """One line as a creditable, what earlier notes credited of it taken off."""
    if line.settlement == "info":
        raise InvoiceState(
            f"line {line.id} is a statement (nothing was charged for it); it cannot be credited"
        )
    return Creditable(
        amount=line.amount,
        taxable=line.taxable,
        rate_pct=line.tax_rate_pct,
        tax=line.tax,
        bonus=line_bonus(line, unit),
        done=credited.of(line.id),
    )


def _credit_items(
    session: Session, invoice: Invoice, requests: Sequence[CreditRequest]
) -> list[_Item]:
    """Check the requests against the invoice and compute each one's credit."""
    unit = currency(invoice.currency)
    lines = {
        line.id: line
        for line in session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id))
    }
    credited = _credited_so_far(session, invoice)
    items: list[_Item] = []
    seen: set[int | None] = set()
    for req in requests:
        if req.line_id in seen:
            raise InvalidAmount(f"line {req.line_id} is named twice; one entry per line")
        seen.add(req.line_id)
        if req.net is not None:
            check_credit_amount(req.net, unit, invoice.id)
        wanted = req.net.atoms if req.net is not None else None
        if req.line_id is None:
            part = _due_part(invoice, list(lines.values()), credited)
            credit = credit_of(
                part, wanted, unit, subject=f"invoice {invoice.number}", noun=" of billed amounts"
            )
            items.append(_Item(None, "Credit on billed amounts", "due", credit))
            continue
        line = lines.get(req.line_id)
        if line is None:
            raise NotFound(f"invoice {invoice.id} has no line {req.line_id}")
        credit = credit_of(
            _line_part(line, unit, credited), wanted, unit, subject=f"line {line.id}"
        )
        items.append(_Item(line, line.description, line.settlement, credit))
    if any(i.line is None for i in items) and any(
        i.line is not None and i.settlement == "due" for i in items
    ):
        raise InvalidAmount("credit either due lines or an amount on the due part, not both")
    return items


@dataclass(frozen=True, slots=True)
class _Booked:
    """The credit note's ledger entry and the lots it gave back."""

    entry_id: int
    lot_id: int | None
    bonus_lot_id: int | None


def _book_credit(
    session: Session,
    invoice: Invoice,
    split: CreditSplit,
    *,
    note_id: str,
    reason: str,
    at: datetime,
) -> _Booked:
    """Post the credit note's entry and give the wallet part back as paid and bonus lots."""
    unit = currency(invoice.currency)
    account = session.get_one(Account, invoice.account_id)
    house = invoicing_house(session, book_of(account), unit)
    cust = customer_ledger(session, account)
    bonus_expires = _bonus_expiry(session, invoice) if split.to_bonus else None
    bonus_lapsed = bonus_expires is not None and bonus_expires <= at
    legs = [Leg(house.credit_notes.id, Amount(split.net, unit))]
    if split.tax:
        legs.append(Leg(house.tax_payable.id, Amount(split.tax, unit)))
    if split.to_receivable:
        owed = receivable_invoiced(session, account)
        legs.append(Leg(owed.id, Amount(-split.to_receivable, unit)))
    if split.to_paid:
        legs.append(Leg(cust.prepaid.id, Amount(-split.to_paid, unit)))
    if split.to_bonus:
        # a bonus whose validity is over lapses at once: booked as a bonus expiry would be
        target = (
            house_ledger(session, book_of(account), unit).promotions if bonus_lapsed else cust.bonus
        )
        legs.append(Leg(target.id, Amount(-split.to_bonus, unit)))
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
    lot_id = _give_back(session, account, (PAID, unit), cust.prepaid.id, split.to_paid, note_id)
    bonus_lot_id = None
    if not bonus_lapsed:
        bonus_lot_id = _give_back(
            session, account, (BONUS, unit), cust.bonus.id, split.to_bonus, note_id, bonus_expires
        )
    return _Booked(entry.id, lot_id, bonus_lot_id)


def _give_back(
    session: Session,
    account: Account,
    kind: tuple[str, Unit],
    ledger_account_id: int,
    atoms: int,
    note_id: str,
    expires_at: datetime | None = None,
) -> int | None:
    """A credit lot of ``atoms`` (``kind``: lot kind and unit) for the credit note.

    None when there is nothing to give back.
    """
    if not atoms:
        return None
    lot = CreditLot(
        account_id=account.id,
        kind=kind[0],
        unit=kind[1].code,
        ledger_account_id=ledger_account_id,
        granted=atoms,
        remaining=atoms,
        expires_at=expires_at,
        source_type="credit_note",
        source_id=note_id,
    )
    session.add(lot)
    session.flush()
    return lot.id


def _store_note(
    session: Session,
    invoice: Invoice,
    items: Sequence[_Item],
    split: CreditSplit,
    booked: _Booked,
    *,
    note_id: str,
    reason: str,
    at: datetime,
) -> CreditNote:
    """Number the credit note (``CN`` series) and store it with its lines."""
    number = next_number(session, "CN", invoice.currency, at)
    note = CreditNote(
        id=note_id,
        number=number.text,
        series=number.series,
        sequence=number.sequence,
        invoice_id=invoice.id,
        account_id=invoice.account_id,
        currency=invoice.currency,
        reason=reason.strip(),
        net=split.net,
        tax=split.tax,
        total=split.total,
        to_receivable=split.to_receivable,
        to_wallet=split.to_wallet,
        to_bonus=split.to_bonus,
        entry_id=booked.entry_id,
        lot_id=booked.lot_id,
        bonus_lot_id=booked.bonus_lot_id,
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
            net=i.credit.net,
            tax=i.credit.tax,
            to_bonus=i.credit.bonus,
        )
        for i in items
    )
    return note


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
    the prepaid balance as a new paid lot (and what bonus credit paid as a bonus lot).

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
    invoice = lock_invoice(session, invoice_id)
    if invoice.status not in OPEN_STATUSES:
        raise InvoiceState(
            f"invoice {invoice.id} is {invoice.status}; credit notes go against finalized invoices"
        )
    items = _credit_items(session, invoice, requests)
    split = split_credit([(i.settlement, i.credit) for i in items], open_balance(invoice))
    at = now or utcnow()
    note_id = new_id("cn")
    booked = _book_credit(session, invoice, split, note_id=note_id, reason=reason, at=at)
    note = _store_note(
        session, invoice, items, split, booked, note_id=note_id, reason=reason, at=at
    )
    invoice.credited += split.total
    invoice.credited_receivable += split.to_receivable
    settle_status(invoice, at)
    session.flush()
    return note
