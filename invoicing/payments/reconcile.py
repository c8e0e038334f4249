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

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from invoicing.payments.accounts import card_ledger
from invoicing.payments.gateway import BalanceTransaction, PaymentGateway
from invoicing.payments.models import Payment, ReconciliationReport
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.journal import Leg, post_entry
from ledger.models import OPERATOR_BOOK, LedgerAccount
from ledger.units import unit as unit_of

#: Balance transaction types that move money between the provider balance and our bank (or
#: other balances): not booked by tokenwallet, reported apart.
NOT_BOOKED_TYPES = frozenset(
    {
        "payout",
        "payout_cancel",
        "payout_failure",
        "payout_minimum_balance_hold",
        "payout_minimum_balance_release",
        "transfer",
        "transfer_cancel",
        "transfer_failure",
        "transfer_refund",
        "topup",
        "topup_reversal",
    }
)

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


@dataclass(frozen=True, slots=True)
class DayReport:
    """One currency's reconciliation of one day (amounts in atoms of the currency)."""

    day: date
    currency: str
    provider_net: Amount
    provider_fees: Amount
    ledger_net: Amount
    difference: Amount
    transactions: int
    details: dict[str, Any]

    @property
    def balanced(self) -> bool:
        """True when the provider and the ledger agree for the day."""
        return self.difference.is_zero()


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
    """Compare one UTC day of provider balance transactions with ``cash:stripe`` and store
    the report per currency (re-running a day replaces its report).

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
        unit = unit_of(code)
        provider: dict[str, int] = defaultdict(int)
        ledger: dict[str, int] = defaultdict(int)
        by_type: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        not_booked: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        provider_net = fees = count = 0
        for bt in bts:
            if bt.currency != code:
                continue
            if bt.type in NOT_BOOKED_TYPES:
                not_booked[bt.type]["count"] += 1
                not_booked[bt.type]["amount_minor"] += bt.amount_minor
                continue
            count += 1
            net = bt.amount_minor - bt.fee_minor
            provider_net += net
            fees += bt.fee_minor
            by_type[bt.type]["count"] += 1
            by_type[bt.type]["amount_minor"] += bt.amount_minor
            by_type[bt.type]["fee_minor"] += bt.fee_minor
            provider[bt.payment_intent_id or f"{bt.type}:{bt.source_id or bt.id}"] += (
                net * unit.atoms_per_minor
            )
        ledger_net = 0
        for r in ledger_rows.get(code, []):
            atoms = int(r.amount)
            ledger_net += atoms
            meta = r.meta or {}
            pi = meta.get("payment_intent_id") or topup_pis.get(str(meta.get("topup_id")))
            ledger[pi or f"entry:{r.entry_id}"] += atoms
        mismatches = [
            {
                "ref": ref,
                "provider": Amount(provider.get(ref, 0), unit).format(),
                "ledger": Amount(ledger.get(ref, 0), unit).format(),
                "difference": Amount(provider.get(ref, 0) - ledger.get(ref, 0), unit).format(),
            }
            for ref in sorted(set(provider) | set(ledger))
            if provider.get(ref, 0) != ledger.get(ref, 0)
        ]
        net_atoms = provider_net * unit.atoms_per_minor
        report = DayReport(
            day=day,
            currency=code,
            provider_net=Amount(net_atoms, unit),
            provider_fees=Amount(fees * unit.atoms_per_minor, unit),
            ledger_net=Amount(ledger_net, unit),
            difference=Amount(net_atoms - ledger_net, unit),
            transactions=count,
            details={
                "by_type": {k: dict(v) for k, v in sorted(by_type.items())},
                "not_booked": {k: dict(v) for k, v in sorted(not_booked.items())},
                "mismatches": mismatches,
            },
        )
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
