"""Daily reconciliation of the provider's balance transactions with ``cash:stripe``.

For one UTC day and each currency: the provider's balance transactions created that day (card
payments, refunds, dispute withdrawals and reinstatements, fees) against the postings on our
``cash:stripe`` whose entries are effective that day. Differences are reported per payment
intent (and per unmatched item), and the report is stored (one row per day and currency;
re-running a day replaces it).

Fees: the provider's fee on each balance transaction is booked here as an expense
(``expense:payment_fees`` debit, ``cash:stripe`` credit, once per balance transaction, effective
when the provider charged it), so ``cash:stripe`` follows the provider balance net of fees.
Payouts, transfers and balance top-ups move money between the provider balance and our bank
and are not booked by tokenwallet: they are listed in the report and left out of the
comparison.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from invoicing.payments.accounts import card_ledger
from invoicing.payments.gateway import BalanceTransaction, PaymentGateway
from invoicing.payments.matching import (
    NOT_BOOKED_TYPES,
    DayReport,
    LedgerItem,
    reconcile_currency,
)
from invoicing.payments.models import Payment, ReconciliationReport
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.journal import Leg, post_entry
from ledger.models import OPERATOR_BOOK, LedgerAccount
from ledger.units import unit as unit_of

_LEDGER_ITEMS = text(
    """
    SELECT e.id AS entry_id, e.metadata AS meta, sum(p.amount) AS amount
    FROM ledger_postings p JOIN ledger_entries e ON e.id = p.entry_id
    WHERE p.account_id = :account_id AND p.phase = 0
      AND e.effective_at >= :start AND e.effective_at < :end
    GROUP BY e.id, e.metadata
    ORDER BY e.id
    """
)


def _book_fees(session: Session, bts: list[BalanceTransaction]) -> int:
    booked = 0
    for bt in bts:
        if bt.type in NOT_BOOKED_TYPES or bt.fee_minor == 0:
            continue
        unit = unit_of(bt.currency)
        accounts = card_ledger(session, unit)
        fee = Amount.of_minor(bt.fee_minor, unit)
        entry = post_entry(
            session,
            [Leg(accounts.fees.id, fee), Leg(accounts.cash.id, -fee)],
            description=f"Stripe fee on {bt.type} {bt.source_id or bt.id}",
            idempotency_key=f"stripe-fee:{bt.id}",
            effective_at=bt.created_at,
            metadata={"balance_transaction": bt.id, "payment_intent_id": bt.payment_intent_id},
        )
        booked += 0 if entry.replayed else 1
    return booked


def _pi_of_topups(session: Session, topup_ids: set[str]) -> dict[str, str | None]:
    if not topup_ids:
        return {}
    return {
        row.topup_id: row.payment_intent_id
        for row in session.execute(
            select(Payment.topup_id, Payment.payment_intent_id).where(
                Payment.topup_id.in_(topup_ids)
            )
        )
    }


def reconcile_day(
    session: Session, gateway: PaymentGateway, day: date, *, book_fees: bool = True
) -> list[DayReport]:
    """Compare one UTC day of provider balance transactions with ``cash:stripe``.

    The report of each currency is stored; re-running a day replaces it.

    Raises:
        PaymentProviderError: the provider could not be asked.
    """
    start = datetime.combine(day, time(0), tzinfo=UTC)
    end = start + timedelta(days=1)
    bts = gateway.balance_transactions(start, end)
    if book_fees:
        _book_fees(session, bts)
    session.flush()
    currencies = {bt.currency for bt in bts}
    cash_accounts = {
        row.unit: row.id
        for row in session.execute(
            select(LedgerAccount.unit, LedgerAccount.id).where(
                LedgerAccount.code == "cash:stripe", LedgerAccount.book == OPERATOR_BOOK
            )
        )
    }
    ledger_rows: dict[str, list[Any]] = {}
    for code, account_id in cash_accounts.items():
        rows = session.execute(
            _LEDGER_ITEMS, {"account_id": account_id, "start": start, "end": end}
        ).all()
        if rows:
            ledger_rows[code] = list(rows)
            currencies.add(code)
    topup_pis = _pi_of_topups(
        session,
        {
            str(r.meta["topup_id"])
            for rows in ledger_rows.values()
            for r in rows
            if r.meta.get("topup_id")
        },
    )
    reports = []
    for code in sorted(currencies):
        items = [
            LedgerItem(int(r.entry_id), r.meta or {}, int(r.amount))
            for r in ledger_rows.get(code, [])
        ]
        report = reconcile_currency(day, code, bts, items, topup_pis)
        _store(session, report)
        reports.append(report)
    return reports


def _store(session: Session, report: DayReport) -> None:
    now = utcnow()
    values = {
        "provider_net": report.provider_net.atoms,
        "provider_fees": report.provider_fees.atoms,
        "ledger_net": report.ledger_net.atoms,
        "difference": report.difference.atoms,
        "transactions": report.transactions,
        "details": report.details,
        "updated_at": now,
    }
    session.execute(
        insert(ReconciliationReport)
        .values(provider="stripe", day=report.day, currency=report.currency, **values)
        .on_conflict_do_update(
            constraint="uq_payment_reconciliations_day",
            set_={**values, "run_count": ReconciliationReport.run_count + 1},
        )
    )


def stored_reports(
    session: Session, *, day: date | None = None, limit: int
) -> list[ReconciliationReport]:
    """Stored daily reports, newest day first, then by currency.

    Args:
        session: the caller's session (read only).
        day: only this day's reports, one per currency (None: every day).
        limit: at most this many.
    """
    stmt = select(ReconciliationReport).order_by(
        ReconciliationReport.day.desc(), ReconciliationReport.currency
    )
    if day is not None:
        stmt = stmt.where(ReconciliationReport.day == day)
    return list(session.scalars(stmt.limit(limit)))
