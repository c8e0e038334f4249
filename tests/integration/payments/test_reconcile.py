"""Reconciliation of a day of Stripe balance transactions with cash:stripe.

The service, the CLI command and the scheduler job.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, text
from typer.testing import CliRunner

import api.cli as cli
from api.scheduler import payment_jobs, run_locked
from api.settings import Settings
from invoicing.payments.models import ReconciliationReport
from invoicing.payments.reconcile import reconcile_day
from tests.stripe_fakes import T0, balance_txn, charge_obj, dispute_obj, event

DAY = datetime.fromtimestamp(T0, UTC).date()


def stripe_day(fake, pi):
    """What Stripe's balance shows for the day: the payment, a refund, a dispute, a payout."""
    ch = charge_obj("ch_rec", pi, amount=50000)
    fake.balance_transactions += [
        balance_txn(type="charge", amount=50000, fee=1480, created=T0 + 61, source=ch),
        balance_txn(
            type="refund",
            amount=-10000,
            fee=0,
            created=T0 + 3601,
            source={"id": "re_rec", "object": "refund", "payment_intent": pi},
        ),
        balance_txn(
            type="adjustment",
            amount=-5000,
            fee=1500,
            created=T0 + 7201,
            source=dispute_obj("dp_rec", "ch_rec", pi, amount=5000, status="needs_response"),
        ),
        balance_txn(
            type="payout",
            amount=-20000,
            fee=0,
            created=T0 + 9000,
            source={"id": "po_1", "object": "payout"},
        ),
    ]


def our_day(card_topup, deliver, pi):
    _, _, completed = card_topup("500.00", pi=pi)
    deliver(completed)
    deliver(
        event(
            "charge.refunded",
            charge_obj("ch_rec", pi, amount=50000, amount_refunded=10000),
            created=T0 + 3600,
        )
    )
    deliver(
        event(
            "charge.dispute.created",
            dispute_obj("dp_rec", "ch_rec", pi, amount=5000, status="needs_response"),
            created=T0 + 7200,
        )
    )


def fees_booked(s):
    return s.scalar(
        text(
            "SELECT coalesce(sum(p.amount), 0) FROM ledger_postings p"
            " JOIN ledger_accounts a ON a.id = p.account_id WHERE a.code = 'expense:payment_fees'"
        )
    )


def test_a_day_that_ties_books_fees_once_and_reports_balanced(
    session_factory, gateway, fake, card_topup, deliver
):
    our_day(card_topup, deliver, "pi_rec")
    stripe_day(fake, "pi_rec")
    with session_factory.begin() as s:
        (report,) = reconcile_day(s, gateway, DAY)
    assert report.balanced, report.details
    assert report.provider_net.format() == "320.20"  # 500 - 14.80 - 100 - 50 - 15.00
    assert report.provider_fees.format() == "29.80"
    assert report.ledger_net == report.provider_net
    assert report.transactions == 3
    assert report.details["not_booked"] == {"payout": {"count": 1, "amount_minor": -20000}}
    assert report.details["mismatches"] == []
    # Running the day again replaces the report and books no fee twice.
    with session_factory.begin() as s:
        (again,) = reconcile_day(s, gateway, DAY)
        assert again.balanced
        assert fees_booked(s) == 2980 * 10**16
        row = s.scalars(select(ReconciliationReport)).one()
        assert (row.run_count, row.difference) == (2, 0)


def test_differences_are_reported_per_payment(session_factory, gateway, fake, card_topup, deliver):
    our_day(card_topup, deliver, "pi_diff")
    stripe_day(fake, "pi_diff")
    fake.balance_transactions.append(
        balance_txn(
            type="charge",
            amount=7000,
            fee=233,
            created=T0 + 100,
            source=charge_obj("ch_foreign", "pi_foreign", amount=7000),
        )
    )
    with session_factory.begin() as s:
        (report,) = reconcile_day(s, gateway, DAY)
    assert not report.balanced
    # Its fee was booked (Stripe charged it); the 70.00 charge itself is unknown to us.
    assert report.difference.format() == "70.00"
    assert report.details["mismatches"] == [
        {"ref": "pi_foreign", "provider": "67.67", "ledger": "-2.33", "difference": "70.00"}
    ]


def test_cli_and_scheduler_job(
    session_factory, gateway, fake, card_topup, deliver, database_url, monkeypatch
):
    our_day(card_topup, deliver, "pi_cli")
    stripe_day(fake, "pi_cli")
    monkeypatch.setattr(cli, "_database_url", lambda: database_url)
    monkeypatch.setattr(cli, "_payment_gateway", lambda: gateway)
    result = CliRunner().invoke(cli.app, ["payments", "reconcile", "--day", DAY.isoformat()])
    assert result.exit_code == 0, result.output
    assert f"{DAY} USD: Stripe net 320.20" in result.output and "balanced" in result.output
    fake.balance_transactions.append(
        balance_txn(type="charge", amount=100, fee=0, created=T0 + 5, source="ch_unknown")
    )
    result = CliRunner().invoke(cli.app, ["payments", "reconcile", "--day", DAY.isoformat()])
    assert result.exit_code == 1 and "DIFFERENCE 1.00" in result.output
    assert "charge:ch_unknown" in result.output
    # The scheduler job reconciles yesterday (the day of these events) under its lock.
    assert payment_jobs(Settings(stripe_api_key=None, stripe_webhook_secret=None)) == []
    jobs = {j.name: j for j in payment_jobs(Settings(), gateway=gateway)}
    assert set(jobs) == {"stripe_event_retry", "stripe_reconcile"}
    fake.balance_transactions.pop()
    assert run_locked(session_factory, jobs["stripe_reconcile"])
    with session_factory() as s:
        row = s.scalars(select(ReconciliationReport)).one()
        assert (row.day, row.run_count, row.difference) == (DAY, 3, 0)
