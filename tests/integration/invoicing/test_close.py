"""The month-end close on real PostgreSQL.

Lines and totals to the cent, ledger ties, late usage, repeat-safety, a crash halfway, racing
closes, and the usage gate's exact boundary.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session

import invoicing.close as close_mod
from invoicing.close import close_account, close_period
from invoicing.errors import PeriodNotEnded, PeriodOrder
from invoicing.models import Invoice
from ledger.accounts import get_balance
from tests.helpers import lock_waiters
from wallet.gate import enter_exclusive, enter_shared
from wallet.ledger_accounts import customer_ledger
from wallet.models import Account

from .conftest import (
    APR,
    CLOSE_AT,
    MAR,
    at,
    by_account,
    lines_of,
    money,
    new_account,
)


def _acme_is_prepaid(session: Session, acme: Invoice) -> None:
    """Acme: prepaid; plan fee and package paid from the balance, nothing due."""
    rows = [
        (ln.kind, ln.settlement, money(ln.amount), ln.requests, ln.tokens)
        for ln in lines_of(session, acme.id)
    ]
    assert rows == [
        ("plan_fee", "prepaid", "20.00", 1, 0),
        ("package", "prepaid", "9.00", 1, 1_000_000),
        ("prepaid_usage", "info", "0.00", 3, 6000),
        ("failed_request_credit", "info", "0.02", 1, 2000),
    ]
    acme_lines = lines_of(session, acme.id)
    assert acme_lines[2].details["plan_requests"] == 2
    assert acme_lines[2].details["package_tokens"] == 2000
    assert acme_lines[3].details["reason"] == "provider_error:not_billed"
    assert money(acme_lines[3].amount_exact) == "0.018"
    assert (money(acme.total), money(acme.prepaid_applied), money(acme.amount_due)) == (
        "29.00",
        "29.00",
        "0.00",
    )
    assert acme.status == "paid" and acme.due_date == CLOSE_AT.date()


def _globex_owes_rounded_taxed_overage(session: Session, globex: Invoice) -> None:
    """Globex: postpaid overage, rounded once (half-even), taxed per line, net 30."""
    g = lines_of(session, globex.id)
    assert [(ln.kind, ln.settlement) for ln in g] == [
        ("overage", "due"),
        ("failed_request_credit", "info"),
    ]
    assert (g[0].requests, g[0].tokens) == (6, 5 * 2000 + 333_334)
    assert (money(g[0].amount_exact), money(g[0].amount), money(g[0].tax)) == (
        "1.090014",
        "1.09",
        "0.22",
    )
    assert (money(globex.subtotal), money(globex.tax), money(globex.amount_due)) == (
        "1.09",
        "0.22",
        "1.31",
    )
    assert money(globex.rounding) == "-0.000014"
    assert globex.status == "finalized" and globex.due_date == CLOSE_AT.date() + timedelta(days=30)
    assert globex.bill_to["name"] == "Globex GmbH"


def _resell_is_billed_at_wholesale(session: Session, resell: Invoice) -> None:
    """Resell: its sub-accounts' usage at wholesale; the float paid 10.00, 8.00 is overage."""
    r = lines_of(session, resell.id)
    # Sub Two's record was paid 1.00 from the float and 8.00 as overage: its request is on the
    # overage line, its 2.2M tokens shared 8:1 (each record's tokens are counted once)
    assert [(ln.kind, ln.settlement, money(ln.amount), ln.requests, ln.tokens) for ln in r] == [
        ("overage", "due", "8.00", 1, 1_955_555),
        ("prepaid_usage", "prepaid", "10.00", 1, 2_444_445),
        ("failed_request_credit", "info", "0.02", 1, 2000),
    ]
    assert r[1].details["requests_shared_with_overage"] == 1
    assert sum(ln.tokens for ln in r[:2]) == 2 * 2_200_000
    # no tax profile: nothing taxed, the prepaid balance settles the prepaid line
    assert (money(resell.subtotal), money(resell.tax), money(resell.prepaid_applied)) == (
        "18.00",
        "0.00",
        "10.00",
    )
    assert money(resell.amount_due) == "8.00"


def _ledger_ties(session: Session, month: dict[str, Account]) -> None:
    """The ledger: unbilled overage moved to invoiced receivables, tax payable, rounding."""
    for key, due in (("globex", "1.31"), ("resell", "8.00")):
        account = month[key]
        cust = customer_ledger(session, account)
        assert get_balance(session, cust.receivable_unbilled.id).posted.is_zero()
        invoiced = session.execute(
            sa.text(
                "SELECT debits_posted - credits_posted FROM ledger_accounts"
                " WHERE code = 'receivable:invoiced' AND owner_id = :o"
            ),
            {"o": account.id},
        ).scalar_one()
        assert money(int(invoiced)) == due
    house = dict(
        session.execute(
            sa.text(
                "SELECT a.code, -sum(p.amount) FROM ledger_postings p JOIN ledger_accounts a"
                " ON a.id = p.account_id WHERE a.code IN ('tax:payable', 'revenue:rounding')"
                " GROUP BY a.code"
            )
        ).all()
    )
    assert (money(int(house["tax:payable"])), money(int(house["revenue:rounding"]))) == (
        "0.22",
        "-0.000014",
    )


def test_close_bills_every_line_to_the_cent_and_ties_to_the_ledger(month, shop, session):
    result = close_period(shop, MAR, now=CLOSE_AT, grace=timedelta(days=1))
    assert result.accounts == 3 and len(result.invoice_ids) == 3
    inv = by_account(session)
    acme, globex, resell = (inv[month[k].id] for k in ("acme", "globex", "resell"))
    assert [i.number for i in (acme, globex, resell)] == [
        "INV-USD-2026-000001",
        "INV-USD-2026-000002",
        "INV-USD-2026-000003",
    ]
    _acme_is_prepaid(session, acme)
    _globex_owes_rounded_taxed_overage(session, globex)
    _resell_is_billed_at_wholesale(session, resell)
    _ledger_ties(session, month)


def test_rerun_changes_nothing(month, shop, session):
    first = close_period(shop, MAR, now=CLOSE_AT, grace=timedelta(days=1))
    second = close_period(shop, MAR, now=CLOSE_AT + timedelta(hours=5), grace=timedelta(days=1))
    assert second.invoice_ids == first.invoice_ids
    assert session.scalar(select(sa.func.count()).select_from(Invoice)) == 3
    assert session.scalar(sa.text("SELECT last_value FROM invoicing_number_series")) == 3


def test_crash_halfway_then_rerun_gives_the_same_invoices_without_gaps(
    month, shop, session, monkeypatch
):
    real = close_mod.close_account
    calls = []

    def flaky(s, account_id, period, **kw):
        calls.append(account_id)
        if len(calls) == 2:
            real(s, account_id, period, **kw)  # the second account's work is done...
            raise RuntimeError("killed (injected)")  # ...and lost with its transaction
        return real(s, account_id, period, **kw)

    monkeypatch.setattr(close_mod, "close_account", flaky)
    with pytest.raises(RuntimeError):
        close_period(shop, MAR, now=CLOSE_AT, grace=timedelta(days=1))
    assert [i.account_id for i in session.scalars(select(Invoice))] == [month["acme"].id]
    assert session.scalar(sa.text("SELECT last_value FROM invoicing_number_series")) == 1
    monkeypatch.setattr(close_mod, "close_account", real)
    close_period(shop, MAR, now=CLOSE_AT + timedelta(hours=1), grace=timedelta(days=1))
    inv = by_account(session)
    assert sorted(i.number for i in inv.values()) == [
        "INV-USD-2026-000001",
        "INV-USD-2026-000002",
        "INV-USD-2026-000003",
    ]
    assert money(inv[month["globex"].id].amount_due) == "1.31"
    assert money(inv[month["resell"].id].amount_due) == "8.00"


def test_two_closes_racing_make_one_invoice_each_and_no_gap(month, shop, session):
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run():
        try:
            barrier.wait()
            close_period(shop, MAR, now=CLOSE_AT, grace=timedelta(days=1))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    numbers = sorted(session.scalars(select(Invoice.number)).all())
    assert numbers == ["INV-USD-2026-000001", "INV-USD-2026-000002", "INV-USD-2026-000003"]
    entries = session.scalar(
        sa.text("SELECT count(*) FROM ledger_entries WHERE metadata->>'kind' = 'invoice'")
    )
    assert entries == 2  # Globex and Resell have something due; Acme does not


def test_late_usage_goes_to_the_next_invoice_visibly(month, shop, usage, session):
    close_period(shop, MAR, now=CLOSE_AT, grace=timedelta(days=1))
    globex = month["globex"]
    # occurred in March, received after March was closed; and ordinary April usage
    assert usage(globex, at(31, 20), received=CLOSE_AT + timedelta(hours=3)) == ["charged"]
    assert usage(globex, at(3, 9, APR)) == ["charged"]
    close_period(shop, APR, now=APR.end + timedelta(days=1), grace=timedelta(days=1))
    april = by_account(session, APR)[globex.id]
    rows = [
        (ln.description, ln.source_period, money(ln.amount), ln.requests)
        for ln in lines_of(session, april.id)
    ]
    assert rows == [
        ("m: usage beyond prepaid credit", None, "0.02", 1),
        ("Late usage from 2026-03: m: usage beyond prepaid credit", "2026-03", "0.02", 1),
    ]
    assert april.previous_cutoff_at == CLOSE_AT
    assert april.number == "INV-USD-2026-000004"
    # the March invoice did not change
    assert money(by_account(session)[globex.id].amount_due) == "1.31"


def test_close_refused_before_the_grace_period_and_out_of_order(month, shop):
    with pytest.raises(PeriodNotEnded):
        close_period(shop, MAR, now=APR.start + timedelta(hours=2), grace=timedelta(days=1))
    close_period(shop, APR, now=APR.end + timedelta(days=2), grace=timedelta(days=1))
    with pytest.raises(PeriodOrder):
        close_period(shop, MAR, now=APR.end + timedelta(days=2), grace=timedelta(days=1))


def test_drafts_can_be_reviewed_and_are_finalized_by_a_later_run(month, shop, session):
    close_period(shop, MAR, now=CLOSE_AT, grace=timedelta(days=1), finalize=False)
    assert {i.status for i in by_account(session).values()} == {"draft"}
    assert all(i.number is None for i in by_account(session).values())
    close_period(shop, MAR, now=CLOSE_AT, grace=timedelta(days=1))
    session.expire_all()
    assert sorted(i.number for i in by_account(session).values())[-1] == "INV-USD-2026-000003"


def test_usage_gate_holds_the_close_until_a_batch_in_flight_commits(month, shop, session_factory):
    resell = month["resell"]
    charging = session_factory()
    charging.begin()
    enter_shared(charging, [resell.id])  # a usage batch of the reseller's tree is in flight
    closer = session_factory()
    try:
        closer.execute(sa.text("SET lock_timeout = '300ms'"))
        with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
            enter_exclusive(closer, resell.id)
        closer.rollback()
        other = new_account(shop, "Other")  # other billing trees are not held up
        assert enter_exclusive(closer, other.id) is not None
        closer.rollback()
        charging.commit()
        closer.execute(sa.text("SET lock_timeout = '300ms'"))
        cutoff = enter_exclusive(closer, resell.id)
        closer.rollback()
        assert cutoff.tzinfo is not None
    finally:
        charging.close()
        closer.close()


def test_invoiced_overage_still_uses_the_credit_limit_until_paid(shop, usage):
    tiny = new_account(shop, "Tiny", credit_limit="0.02")
    assert usage(tiny, at(2)) == ["charged"]  # 0.018 overage
    close_period(shop, MAR, now=CLOSE_AT, grace=timedelta(days=1))
    # 0.018 invoiced and unpaid: another 0.018 does not fit under a 0.02 limit
    assert usage(tiny, at(3, 12, APR)) == ["rejected"]


def test_close_account_directly_returns_none_when_there_is_nothing_to_bill(shop, session):
    quiet = new_account(shop, "Quiet")
    with shop.begin() as s:
        assert close_account(s, quiet.id, MAR, now=CLOSE_AT) is None


def test_a_usage_batch_in_flight_during_the_close_lands_on_the_invoice(
    shop, usage, session, monkeypatch
):
    """A close waits for a usage batch in flight, so its record lands on an invoice.

    Without the gate the close would read before the batch commits and, its cut-off being later
    than the batch's received_at, the record would be on no invoice at all.
    """
    import wallet.gateway as charging

    racer = new_account(shop, "Racer", credit_limit="10")
    written, release = threading.Event(), threading.Event()
    real = charging.write

    def paused(*args, **kwargs):
        real(*args, **kwargs)
        written.set()
        assert release.wait(30)

    monkeypatch.setattr(charging, "write", paused)
    batch = threading.Thread(target=lambda: usage(racer, at(30)))
    batch.start()
    assert written.wait(30)
    monkeypatch.setattr(charging, "write", real)
    results = []
    closer = threading.Thread(
        target=lambda: results.append(close_period(shop, MAR, grace=timedelta(days=1)))
    )
    closer.start()  # cut-off from the database clock, like the scheduler and the CLI
    assert lock_waiters(session, "advisory") == 1  # the close waits on the batch's gate
    release.set()
    batch.join(30)
    closer.join(30)
    (invoice,) = [i for i in by_account(session).values() if i.account_id == racer.id]
    assert [(ln.kind, money(ln.amount_exact)) for ln in lines_of(session, invoice.id)] == [
        ("overage", "0.018")
    ]
    assert results and invoice.id in results[0].invoice_ids
