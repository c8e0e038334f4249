"""Receivables aging: what customers owe as of a day, by days past due."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from invoicing.reports.base import Report, fmt
from invoicing.reports.rules import (
    BUCKETS,
    DISPUTED,
    NOT_INVOICED,
    aging_bucket,
)
from ledger.models import OPERATOR_BOOK
from ledger.units import Unit
from ledger.units import unit as unit_of

_OPEN_AS_OF = text(
    """
    SELECT i.id, i.number, i.account_id, a.name, i.period, i.due_date,
           i.amount_due
             - coalesce((SELECT sum(p.amount) FROM invoicing_payments p
                         WHERE p.invoice_id = i.id AND p.received_at < :at), 0)
             - coalesce((SELECT sum(c.to_receivable) FROM invoicing_credit_notes c
                         WHERE c.invoice_id = i.id AND c.issued_at < :at), 0)
             + coalesce((SELECT sum(rp.amount) FROM ledger_entries re
                         JOIN ledger_postings rp ON rp.entry_id = re.id AND rp.phase = 0
                         JOIN ledger_accounts ra ON ra.id = rp.account_id
                         WHERE re.metadata->>'kind' IN ('invoice_payment_reversal',
                                                         'invoice_payment_restored')
                           AND re.metadata->>'invoice_id' = i.id
                           AND ra.code = 'receivable:invoiced'
                           AND re.effective_at < :at), 0) AS open,
           coalesce((SELECT sum(d.amount_minor) FROM payment_disputes d
                     JOIN payments py ON py.id = d.payment_id
                     WHERE py.purpose = 'invoice' AND py.purpose_ref = i.id
                       AND d.created_at < :at
                       AND (d.closed_at IS NULL OR d.closed_at >= :at)), 0) AS disputed_minor
    FROM invoicing_invoices i JOIN wallet_accounts a ON a.id = i.account_id
    WHERE i.currency = :unit AND i.status IN ('finalized', 'paid', 'disputed', 'void')
      AND i.issued_at < :at AND (i.voided_at IS NULL OR i.voided_at >= :at)
    ORDER BY i.due_date, i.number
    """
)

_RECEIVABLE_AS_OF = text(
    """
    SELECT a.code, a.owner_id, w.name, coalesce(sum(p.amount), 0) AS balance
    FROM ledger_postings p
    JOIN ledger_accounts a ON a.id = p.account_id
    JOIN ledger_entries e ON e.id = p.entry_id
    LEFT JOIN wallet_accounts w ON w.id = a.owner_id
    WHERE p.phase = 0 AND a.code IN ('receivable:invoiced', 'receivable:reversals')
      AND a.book = :book AND a.unit = :unit AND e.effective_at < :at
    GROUP BY a.code, a.owner_id, w.name
    ORDER BY a.code, a.owner_id
    """
)


AGING_COLUMNS = (
    "invoice",
    "invoice_id",
    "account_id",
    "account",
    "period",
    "due_date",
    "days_overdue",
    "bucket",
    "open",
    "disputed",
)


def _invoice_row(inv: Any, as_of: date, unit: Unit) -> dict[str, Any] | None:
    """An open (or disputed) invoice's aging row.

    None when it owes nothing and no payment of it is disputed, or it has no due date.
    """
    left = max(int(inv.open), 0)
    disputed = int(inv.disputed_minor) * unit.atoms_per_minor
    if (left <= 0 and not disputed) or inv.due_date is None:
        return None
    days = (as_of - inv.due_date).days
    return {
        "invoice": inv.number,
        "invoice_id": inv.id,
        "account_id": inv.account_id,
        "account": inv.name,
        "period": inv.period,
        "due_date": inv.due_date.isoformat(),
        "days_overdue": max(days, 0),
        "bucket": aging_bucket(days) if left > 0 else DISPUTED,
        "open": fmt(left, unit),
        "disputed": fmt(disputed, unit),
    }


def _debt_row(r: Any, unit: Unit) -> dict[str, Any]:
    """An account's refund and dispute debts that no invoice bills yet, as an aging row."""
    return {
        "invoice": "",
        "invoice_id": "",
        "account_id": r.owner_id,
        "account": r.name or "",
        "period": "",
        "due_date": "",
        "days_overdue": 0,
        "bucket": NOT_INVOICED,
        "open": fmt(int(r.balance), unit),
        "disputed": fmt(0, unit),
    }


def receivables_aging(session: Session, *, currency: str, as_of: date) -> Report:
    """What customers owe the operator at the end of ``as_of`` (UTC).

    Open invoices by days past due, and debts left by refunds and disputes that no invoice bills yet
    (bucket ``not_invoiced``; the next invoice bills them).

    Everything is as of that moment: invoices issued by then and not voided by then, less the
    payments received (less those reversed by then: card refunds, lost disputes) and credit
    notes issued by then. ``summary.ledger_receivable`` is the
    ledger's ``receivable:invoiced`` as of the same moment (entries effective before it), which
    equals the invoices' open balances (``ties``).
    """
    unit = unit_of(currency)
    at = datetime.combine(as_of + timedelta(days=1), time(0), tzinfo=UTC)
    rows: list[dict[str, Any]] = []
    buckets = dict.fromkeys((*BUCKETS, NOT_INVOICED), 0)
    disputed_total = 0
    for inv in session.execute(_OPEN_AS_OF, {"unit": unit.code, "at": at}):
        row = _invoice_row(inv, as_of, unit)
        if row is None:
            continue
        left, disputed = max(int(inv.open), 0), int(inv.disputed_minor) * unit.atoms_per_minor
        if left > 0:
            buckets[row["bucket"]] += left
        disputed_total += disputed
        rows.append(row)
    ledger = 0
    for r in session.execute(
        _RECEIVABLE_AS_OF, {"book": OPERATOR_BOOK, "unit": unit.code, "at": at}
    ):
        if r.code == "receivable:invoiced":
            ledger += int(r.balance)
        elif int(r.balance) > 0:
            buckets[NOT_INVOICED] += int(r.balance)
            rows.append(_debt_row(r, unit))
    invoiced = sum(buckets[b] for b in BUCKETS)
    return Report(
        "receivables-aging",
        list(AGING_COLUMNS),
        rows,
        {
            "currency": unit.code,
            "as_of": as_of.isoformat(),
            "at": at.isoformat(),
            "buckets": {b: fmt(v, unit) for b, v in buckets.items()},
            "total": fmt(invoiced + buckets[NOT_INVOICED], unit),
            "invoiced": fmt(invoiced, unit),
            "not_invoiced": fmt(buckets[NOT_INVOICED], unit),
            "ledger_receivable": fmt(ledger, unit),
            # invoice payments under an open dispute (paid until the dispute is lost)
            "disputed": fmt(disputed_total, unit),
            "ties": ledger == invoiced,
        },
    )
