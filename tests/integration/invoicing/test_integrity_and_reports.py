"""Review fixes on real PostgreSQL.

Finalized invoices are immutable in the database (raw SQL is refused), one payment reference on two
invoices at once is a clear conflict (never a 500), the receivables aging is as of its date, and the
rollforward's ``ties`` compares with an independent figure.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

import invoicing.reports.ledger_reports as reports
from invoicing.close import close_period
from invoicing.credit_notes import CreditRequest, issue_credit_note
from invoicing.invoice_payments import record_payment
from invoicing.lifecycle import void_invoice
from invoicing.periods import Period
from invoicing.reports import prepaid_liability, receivables_aging
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.errors import IdempotencyConflict
from tests.helpers import lock_waiters
from wallet.freezes import freeze_topup_credit
from wallet.ledger_accounts import book_of, currency_of, house_ledger
from wallet.models import Account
from wallet.topups import record_topup

from .conftest import CLOSE_AT, MAR, by_account, lines_of, new_account, usd

GRACE = timedelta(days=1)


@pytest.fixture
def closed(month, shop):
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    return month


# -- finalized invoices are immutable in the database -------------------------------------------


def refused(engine, sql: str, **params) -> str:
    """Run ``sql`` in its own transaction; return the database's refusal message."""
    with pytest.raises(sa.exc.DBAPIError) as info, engine.begin() as conn:
        conn.execute(sa.text(sql), params)
    return str(info.value.orig)


def test_raw_sql_cannot_change_a_finalized_invoice_or_its_lines(closed, engine, session):
    inv = by_account(session)[closed["globex"].id]
    line = lines_of(session, inv.id)[0]
    for sql in (
        "UPDATE invoicing_invoices SET amount_due = amount_due + 1 WHERE id = :id",
        "UPDATE invoicing_invoices SET number = 'INV-USD-2026-999999' WHERE id = :id",
        "UPDATE invoicing_invoices SET total = 0, subtotal = 0 WHERE id = :id",
        "UPDATE invoicing_invoices SET due_date = due_date + 30 WHERE id = :id",
        "UPDATE invoicing_invoices SET bill_to = '{}'::jsonb WHERE id = :id",
        "UPDATE invoicing_invoices SET tax_rate_pct = 0 WHERE id = :id",
    ):
        assert "only its settlement" in refused(engine, sql, id=inv.id), sql
    assert "cannot be deleted" in refused(
        engine, "DELETE FROM invoicing_invoices WHERE id = :id", id=inv.id
    )
    for sql in (
        "UPDATE invoicing_invoice_lines SET amount = 0 WHERE id = :id",
        "UPDATE invoicing_invoice_lines SET tax = 0, taxable = 0 WHERE id = :id",
        "UPDATE invoicing_invoice_lines SET description = 'x' WHERE id = :id",
        "DELETE FROM invoicing_invoice_lines WHERE id = :id",
    ):
        assert "lines cannot be changed" in refused(engine, sql, id=line.id), sql
    assert "lines cannot be changed" in refused(
        engine,
        "INSERT INTO invoicing_invoice_lines (invoice_id, position, kind, description,"
        " settlement, amount_exact, amount, details)"
        " VALUES (:inv, 99, 'overage', 'sneaked in', 'due', 1, 1, '{}')",
        inv=inv.id,
    )
    # settlement bookkeeping still works in raw SQL (rolled back)...
    with engine.connect() as conn:
        conn.execute(
            sa.text(
                "UPDATE invoicing_invoices SET status = 'paid', amount_paid = amount_due,"
                " paid_at = now() WHERE id = :id"
            ),
            {"id": inv.id},
        )
        conn.rollback()
    # ...but a void invoice stays void
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE invoicing_invoices SET status = 'void', voided_at = now() WHERE id = :id"
            ),
            {"id": inv.id},
        )
    assert "cannot go from void to finalized" in refused(
        engine, "UPDATE invoicing_invoices SET status = 'finalized' WHERE id = :id", id=inv.id
    )
    session.expire_all()
    assert session.get(type(inv), inv.id).amount_due == inv.amount_due


def test_drafts_change_freely_and_the_services_still_settle_finalized_invoices(
    month, shop, engine, session
):
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE, finalize=False)
    draft = by_account(session)[month["globex"].id]
    line = lines_of(session, draft.id)[0]
    with engine.connect() as conn:  # a draft is still work in progress (rolled back)
        conn.execute(sa.text("UPDATE invoicing_invoice_lines SET description = 'x' WHERE id = :id"),
                     {"id": line.id})  # fmt: skip
        conn.execute(sa.text("UPDATE invoicing_invoices SET tax = tax WHERE id = :id"),
                     {"id": draft.id})  # fmt: skip
        conn.rollback()
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)  # finalizes the drafts
    inv = by_account(session)
    g, r = inv[month["globex"].id], inv[month["resell"].id]
    with shop.begin() as s:  # payments, credit notes and void change only settlement columns
        record_payment(s, g.id, amount=usd("1.31"), method="bank_transfer", reference="B-1")
        issue_credit_note(s, r.id, requests=[CreditRequest(None, usd("1.00"))], reason="sla")
    acme = inv[month["acme"].id]
    with shop.begin() as s:
        issue_credit_note(
            s, acme.id, requests=[CreditRequest(lines_of(s, acme.id)[0].id, None)], reason="x"
        )
    session.expire_all()
    after = by_account(session)
    assert [after[month[k].id].status for k in ("acme", "globex", "resell")] == [
        "paid",
        "paid",
        "finalized",
    ]
    assert after[month["resell"].id].credited == usd("1.00").atoms


def test_void_still_works_under_the_trigger(closed, shop, session):
    r = by_account(session)[closed["resell"].id]
    with shop.begin() as s:
        void_invoice(s, r.id, reason="issued in error")
    session.expire_all()
    assert session.get(type(r), r.id).status == "void"


# -- one payment reference, two invoices, at once -----------------------------------------------


def test_one_reference_on_two_invoices_at_once_is_a_clear_conflict(closed, shop, session):
    inv = by_account(session)
    ids = [inv[closed["globex"].id].id, inv[closed["resell"].id].id]
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def pay(invoice_id: str) -> None:
        try:
            with shop.begin() as s:
                barrier.wait()
                record_payment(
                    s, invoice_id, amount=usd("1.00"), method="bank_transfer", reference="DUP-1"
                )
            outcomes.append("paid")
        except Exception as exc:  # reported below
            outcomes.append(exc)

    threads = [threading.Thread(target=pay, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(map(type, outcomes), key=str) == sorted([str, IdempotencyConflict], key=str)
    (conflict,) = [o for o in outcomes if isinstance(o, IdempotencyConflict)]
    assert "payment reference 'DUP-1' (bank_transfer) was already recorded" in conflict.detail
    assert session.scalar(sa.text("SELECT count(*) FROM invoicing_payments")) == 1


def test_a_unique_violation_on_the_reference_becomes_a_conflict(closed, shop, engine, session):
    """A writer that does not take the reference's lock (raw SQL here) inserts the reference first.

    The service waits on the unique index and turns the violation into a conflict.
    """
    inv = by_account(session)
    g, r = inv[closed["globex"].id], inv[closed["resell"].id]
    raw = engine.connect()
    raw.execute(
        sa.text(
            "INSERT INTO invoicing_payments (id, invoice_id, account_id, amount, method,"
            " reference, entry_id, received_at)"
            " VALUES ('pay_raw', :inv, :acc, 1, 'bank_transfer', 'RAW-1', :entry, now())"
        ),
        {"inv": r.id, "acc": r.account_id, "entry": r.finalize_entry_id},
    )
    outcome: list[object] = []

    def pay() -> None:
        try:
            with shop.begin() as s:
                record_payment(
                    s, g.id, amount=usd("1.00"), method="bank_transfer", reference="RAW-1"
                )
            outcome.append("paid")
        except Exception as exc:
            outcome.append(exc)

    t = threading.Thread(target=pay)
    t.start()
    waiting = lock_waiters(session, "transactionid")  # the service waits on the unique index
    raw.commit()
    raw.close()
    t.join(30)
    assert waiting == 1
    (exc,) = outcome
    assert isinstance(exc, IdempotencyConflict), exc
    assert "already recorded as pay_raw" in exc.detail
    with engine.begin() as conn:  # the raw row is not a real payment: take it away again
        conn.execute(sa.text("DELETE FROM invoicing_payments WHERE id = 'pay_raw'"))


# -- the receivables aging is as of its date ----------------------------------------------------


def test_aging_counts_only_what_happened_by_the_as_of_date(closed, shop, session):
    inv = by_account(session)
    g, r = inv[closed["globex"].id], inv[closed["resell"].id]
    with shop.begin() as s:
        record_payment(
            s,
            g.id,
            amount=usd("1.00"),
            method="bank_transfer",
            reference="A-1",
            received_at=datetime(2026, 4, 20, 9, tzinfo=UTC),
        )
        issue_credit_note(
            s,
            r.id,
            requests=[CreditRequest(None, usd("2.00"))],
            reason="goodwill",
            now=datetime(2026, 4, 25, 9, tzinfo=UTC),
        )

    def aging(day: int, month: int = 4):
        report = receivables_aging(
            session, currency="USD", as_of=datetime(2026, month, day, tzinfo=UTC).date()
        )
        assert report.summary["ties"] is True, report.summary
        return {row["invoice"]: (row["bucket"], row["open"]) for row in report.rows}, report

    before_issue, report = aging(31, 3)
    assert before_issue == {} and report.summary["ledger_receivable"] == "0.00"
    # as of 10 April: nothing paid or credited yet (the report used to show today's balances)
    april_10, report = aging(10)
    assert april_10 == {
        "INV-USD-2026-000003": ("1-30", "8.00"),  # due on receipt, 2 April
        "INV-USD-2026-000002": ("current", "1.31"),  # net 30
    }
    assert report.summary["ledger_receivable"] == "9.31"
    april_20, _ = aging(20)  # the payment counts on its own day
    assert april_20["INV-USD-2026-000002"] == ("current", "0.31")
    assert aging(30)[0] == {
        "INV-USD-2026-000003": ("1-30", "6.00"),
        "INV-USD-2026-000002": ("current", "0.31"),
    }
    # paid in full on 3 May: still owed as of 2 May
    with shop.begin() as s:
        record_payment(s, r.id, amount=usd("6.00"), method="bank_transfer", reference="A-2",
                       received_at=datetime(2026, 5, 3, tzinfo=UTC))  # fmt: skip
    assert aging(2, 5)[0]["INV-USD-2026-000003"] == ("1-30", "6.00")
    assert "INV-USD-2026-000003" not in aging(3, 5)[0]


def test_a_voided_invoice_was_owed_until_it_was_voided(closed, shop, session):
    r = by_account(session)[closed["resell"].id]
    with shop.begin() as s:
        void_invoice(s, r.id, reason="issued in error", now=datetime(2026, 4, 15, tzinfo=UTC))
    for day, owed in ((14, True), (15, False)):
        report = receivables_aging(
            session, currency="USD", as_of=datetime(2026, 4, day, tzinfo=UTC).date()
        )
        assert ("INV-USD-2026-000003" in {x["invoice"] for x in report.rows}) is owed
        assert report.summary["ties"] is True


# -- the rollforward ties to an independent figure ----------------------------------------------


def test_the_rollforward_ties_to_the_ledger_and_would_not_if_it_misread_the_postings(
    shop, session, monkeypatch
):
    """Credit frozen by an open dispute at the period's end is a *pending* prepaid posting.

    The posting is on the customer's prepaid account. A report that read pending postings as
    posted would still agree with itself (opening + movements = its own closing), so only the
    independent figure catches it.
    """
    now = utcnow()
    period = Period.containing(now)
    acc = new_account(shop, "Holder")
    with shop.begin() as s:
        topup = record_topup(s, acc.id, amount="10.00", method="bank_transfer").topup
    with shop.begin() as s:
        account = s.get_one(Account, acc.id)
        house = house_ledger(s, book_of(account), currency_of(account))
        freeze = freeze_topup_credit(
            s,
            topup.id,
            Amount.parse("0.45", currency_of(account)),
            key="dispute:dp_1",
            forfeit_to_account_id=house.cash.id,
        )
        assert freeze.status == "frozen"
    good = prepaid_liability(session, period=period, currency="USD")
    assert good.summary["ties"] is True
    assert good.summary["ledger_closing"] == good.summary["computed_closing"] == "10.00"
    lines = {row["line"]: row["total"] for row in good.rows}
    assert (lines["purchased"], lines["closing"]) == ("10.00", "10.00")

    def pending_too(query: sa.TextClause) -> sa.TextClause:  # the bug: pending read as posted
        return sa.text(str(query).replace("p.phase = 0 AND", ""))

    monkeypatch.setattr(reports, "_BALANCE_BEFORE", pending_too(reports._BALANCE_BEFORE))
    monkeypatch.setattr(reports, "_MOVEMENTS", pending_too(reports._MOVEMENTS))
    wrong = prepaid_liability(session, period=period, currency="USD")
    assert wrong.summary["computed_closing"] == "9.55"  # 0.45 frozen, read as spent
    assert wrong.summary["ledger_closing"] == "10.00"
    assert wrong.summary["ties"] is False
