"""Review fixes on real PostgreSQL.

Prepaid consumption is taxed when it is consumed (on the part paid with money, never on bonus
credit); debts left by refunds and disputes use the credit limit, are billed once on the next
invoice and age in the receivables report.
"""

from __future__ import annotations

import io
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from pypdf import PdfReader
from sqlalchemy import select

import invoicing.close as close_mod
from invoicing.close import close_period
from invoicing.credit_notes import CreditRequest, issue_credit_note
from invoicing.documents import Issuer, render_invoice_pdf
from invoicing.invoice_payments import record_payment
from invoicing.lifecycle import finalize_draft, open_balance, void_invoice
from invoicing.models import Invoice
from invoicing.profiles import create_tax_profile
from invoicing.reports import receivables_aging
from tests.helpers import lock_waiters
from wallet.accounts import lock_accounts
from wallet.balance import balance_of
from wallet.freezes import book_receivable
from wallet.models import Account
from wallet.refunds import reverse_topup
from wallet.topups import record_topup

from .conftest import (
    APR,
    CLOSE_AT,
    MAR,
    at,
    by_account,
    lines_of,
    money,
    new_account,
    package,
    subscribe,
    topup,
    usd,
)

GRACE = timedelta(days=1)
APR_CLOSE = APR.end + timedelta(days=1)


def ledger_balance(session, code: str, owner: str) -> str:
    atoms = session.execute(
        sa.text(
            "SELECT coalesce(sum(debits_posted - credits_posted), 0) FROM ledger_accounts"
            " WHERE code = :code AND owner_id = :owner"
        ),
        {"code": code, "owner": owner},
    ).scalar_one()
    return money(int(atoms))


def house_total(session, code: str) -> str:
    atoms = session.execute(
        sa.text(
            "SELECT coalesce(-sum(p.amount), 0) FROM ledger_postings p"
            " JOIN ledger_accounts a ON a.id = p.account_id WHERE a.code = :code AND p.phase = 0"
        ),
        {"code": code},
    ).scalar_one()
    return money(int(atoms))


# -- tax on prepaid consumption ----------------------------------------------------------------


@pytest.fixture
def taxed(shop, usage):
    """A prepaid customer (no credit limit) taxed at 20 %.

    100.00 top-up with 10.00 bonus, the package paid from bonus, the plan fee 1.00 from bonus and
    19.00 from paid credit, usage from plan quota, package tokens and paid credit.
    """
    f = shop
    acc = new_account(f, "Taxed", billing={"tax_profile_id": "vat20"})
    topup(f, acc, "100.00", at(1))
    package(f, acc, at(2))  # 9.00: bonus first in the burn order
    subscribe(f, acc, at(2, 13))  # 20.00: the last 1.00 of bonus, then 19.00 paid credit
    assert usage(acc, at(5), count=3) == ["charged"] * 3  # 2 plan requests, 1 from the package
    # 998,000 package tokens left: they cover that share, the last 2,000 tokens cost 0.006
    assert usage(acc, at(6), input_tokens=1_000_000, output_tokens=0) == ["charged"]
    assert usage(acc, at(7), count=5) == ["charged"] * 5  # 5 x 0.018 from paid credit
    return acc


def test_everything_consumed_is_taxed_on_what_was_paid_with_money(taxed, shop, session):
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    inv = by_account(session)[taxed.id]
    rows = [
        (ln.kind, ln.settlement, money(ln.amount), money(ln.taxable), money(ln.tax))
        for ln in lines_of(session, inv.id)
    ]
    assert rows == [
        ("plan_fee", "prepaid", "20.00", "19.00", "3.80"),
        ("package", "prepaid", "9.00", "0.00", "0.00"),  # paid with bonus credit: no tax
        ("prepaid_usage", "prepaid", "0.10", "0.10", "0.02"),  # 0.096 of paid credit
    ]
    lines = lines_of(session, inv.id)
    assert lines[0].details["from_bonus"] == "1.00" and lines[1].details["from_bonus"] == "9.00"
    assert lines[0].tax_rate_pct == 20
    assert (lines[2].requests, lines[2].tokens) == (9, 6000 + 1_000_000 + 10_000)
    assert (lines[2].details["package_tokens"], lines[2].details["plan_requests"]) == (
        2000 + 998_000,
        2,
    )
    # the net is settled by the prepaid balance; the tax is due on the invoice
    assert (money(inv.subtotal), money(inv.tax), money(inv.total)) == ("29.10", "3.82", "32.92")
    assert (money(inv.prepaid_applied), money(inv.amount_due)) == ("29.10", "3.82")
    assert (money(inv.exact_due), money(inv.rounding)) == ("0.00", "0.00")
    assert inv.status == "finalized" and inv.number == "INV-USD-2026-000001"
    # the ledger: receivable -> tax payable, nothing else moved by the invoice
    assert ledger_balance(session, "receivable:invoiced", taxed.id) == "3.82"
    assert house_total(session, "tax:payable") == "3.82"
    assert ledger_balance(session, "receivable:unbilled", taxed.id) == "0.00"


def test_a_zero_rate_or_no_tax_profile_changes_nothing(shop, usage, session):
    with shop.begin() as s:
        create_tax_profile(s, id="zero", name="Exempt", rate_pct="0")
    zero = new_account(shop, "Zero", billing={"tax_profile_id": "zero"})
    none = new_account(shop, "None")
    for acc in (zero, none):
        topup(shop, acc, "10.00", at(1))
        assert usage(acc, at(3), count=2) == ["charged"] * 2
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    invoices = by_account(session)
    for acc, rate in ((zero, "0"), (none, None)):
        inv = invoices[acc.id]
        (line,) = lines_of(session, inv.id)
        assert (line.kind, line.settlement, money(line.amount), money(line.tax)) == (
            "prepaid_usage",
            "prepaid",
            "0.04",  # 0.036
            "0.00",
        )
        assert line.tax_rate_pct == (None if rate is None else int(rate))
        assert (money(inv.tax), money(inv.amount_due), inv.status) == ("0.00", "0.00", "paid")
    assert house_total(session, "tax:payable") == "0.00"


def test_credit_notes_on_prepaid_lines_return_the_net_to_the_balance_and_reduce_the_tax_owed(
    taxed, shop, session
):
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    inv = by_account(session)[taxed.id]
    plan_line, package_line, _ = lines_of(session, inv.id)
    before = balance_of(session, session.get(Account, taxed.id))
    with shop.begin() as s:  # 5.00 of the plan fee: 19/20 of it was taxable -> 0.95 of tax
        cn1 = issue_credit_note(
            s, inv.id, requests=[CreditRequest(plan_line.id, usd("5.00"))], reason="outage"
        )
    assert (money(cn1.net), money(cn1.tax), money(cn1.to_receivable), money(cn1.to_wallet)) == (
        "5.00",
        "0.95",
        "0.95",
        "5.00",
    )
    with shop.begin() as s:  # the rest of the line: exactly its remaining tax
        cn2 = issue_credit_note(s, inv.id, requests=[CreditRequest(plan_line.id, None)], reason="x")
    assert (money(cn2.net), money(cn2.tax), money(cn2.to_receivable)) == ("15.00", "2.85", "2.85")
    with shop.begin() as s:  # paid with bonus: nothing was taxed, nothing to give back in tax
        cn3 = issue_credit_note(
            s, inv.id, requests=[CreditRequest(package_line.id, None)], reason="y"
        )
    # ...and what bonus paid goes back as bonus, never as refundable paid credit
    assert (money(cn3.tax), money(cn3.to_wallet), money(cn3.to_bonus)) == ("0.00", "9.00", "9.00")
    session.expire_all()
    inv = session.get(Invoice, inv.id)
    assert money(open_balance(inv)) == "0.02"  # the usage line's tax is still owed
    after = balance_of(session, session.get(Account, taxed.id))
    # the plan fee was paid 1.00 from bonus: 1.00 of its 20.00 goes back as bonus
    assert (after.paid - before.paid).format() == "19.00"
    assert (after.bonus - before.bonus).format() == "10.00"
    with shop.begin() as s:
        record_payment(s, inv.id, amount=usd("0.02"), method="bank_transfer", reference="T-1")
    session.expire_all()
    assert session.get(Invoice, inv.id).status == "paid"
    assert house_total(session, "tax:payable") == "0.02"


def test_a_partial_lump_credit_is_taxed_on_the_taxable_share_of_the_due_lines(shop, usage, session):
    acc = new_account(shop, "Mixed", credit_limit="50", billing={"tax_profile_id": "vat20"})
    assert usage(acc, at(3), input_tokens=1_000_000, output_tokens=0) == ["charged"]  # 3.00
    with shop.begin() as s:  # 3.00 owed after a refund beyond the unspent credit: not taxed
        t = record_topup(s, acc.id, amount="1.00", method="bank_transfer", at=at(4)).topup
    with shop.begin() as s:
        reverse_topup(s, t.id, usd("4.00"), on_excess="receivable", effective_at=at(5))
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    inv = by_account(session)[acc.id]
    rows = [
        (ln.kind, ln.settlement, money(ln.amount), money(ln.taxable), money(ln.tax))
        for ln in lines_of(session, inv.id)
    ]
    assert rows == [
        ("overage", "due", "3.00", "3.00", "0.60"),
        ("reversal_debt", "due", "3.00", "0.00", "0.00"),
    ]
    assert money(inv.amount_due) == "6.60"
    with shop.begin() as s:  # 3.00 of the 6.00 billed: half of it was taxable -> 0.30
        note = issue_credit_note(s, inv.id, requests=[CreditRequest(None, usd("3.00"))], reason="z")
    assert (money(note.net), money(note.tax), money(note.to_receivable)) == ("3.00", "0.30", "3.30")
    with shop.begin() as s:
        rest = issue_credit_note(s, inv.id, requests=[CreditRequest(None, None)], reason="z")
    assert (money(rest.net), money(rest.tax)) == ("3.00", "0.30")


# -- debts left by refunds and disputes ----------------------------------------------------------


def book_debt(s, account_id: str, amount: str, key: str, description: str, when) -> None:
    """Book a debt the account owes for a refund or a dispute (Stripe's cash paid it out)."""
    cash = s.execute(
        sa.text("SELECT id FROM ledger_accounts WHERE code = 'cash:stripe' AND book = 'operator'")
    ).scalar_one()
    book_receivable(
        s,
        account_id,
        usd(amount),
        credit_account_id=cash,
        key=key,
        description=description,
        effective_at=when,
    )


@pytest.fixture
def owing(shop, usage):
    """A customer who owes 18.00 in receivable:reversals.

    The customer, with a 10.00 credit limit, spent 18.00 of a 20.00 top-up that was then refunded
    in full at the provider.
    """
    acc = new_account(shop, "Owing", credit_limit="10", billing={"tax_profile_id": "vat20"})
    with shop.begin() as s:
        t = record_topup(s, acc.id, amount="20.00", method="bank_transfer", at=at(1)).topup
    assert usage(acc, at(2), input_tokens=1_000_000, output_tokens=1_000_000) == ["charged"]
    with shop.begin() as s:
        r = reverse_topup(s, t.id, usd("20.00"), on_excess="receivable", effective_at=at(3))
    assert (money(r.refunded.atoms), money(r.receivable.atoms)) == ("2.00", "18.00")
    return acc


def test_refund_debts_use_the_credit_limit(owing, shop, usage, session):
    view = balance_of(session, session.get(Account, owing.id))
    assert view.reversals_owed.format() == "18.00"
    assert view.available.format() == "-8.00"  # 10.00 of limit, 18.00 owed
    # the limit is used up: overage is refused (it used to be accepted up to 10.00)
    assert usage(owing, at(4)) == ["rejected"]
    with shop.begin() as s:  # prepaid credit still pays usage
        record_topup(s, owing.id, amount="0.05", method="bank_transfer", at=at(5))
    assert usage(owing, at(6)) == ["charged"]


def test_refund_debts_are_billed_once_on_the_next_invoice_untaxed(owing, shop, usage, session):
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    inv = by_account(session)[owing.id]
    rows = [
        (ln.kind, ln.settlement, money(ln.amount), money(ln.tax))
        for ln in lines_of(session, inv.id)
    ]
    assert rows == [
        ("prepaid_usage", "prepaid", "18.00", "3.60"),
        ("reversal_debt", "due", "18.00", "0.00"),
    ]
    assert lines_of(session, inv.id)[1].description.startswith("Owed from refunds and disputes")
    assert (money(inv.amount_due), money(inv.exact_due)) == ("21.60", "18.00")
    # moved at finalize from the reversal receivable to the invoiced one
    assert ledger_balance(session, "receivable:reversals", owing.id) == "0.00"
    assert ledger_balance(session, "receivable:invoiced", owing.id) == "21.60"
    assert balance_of(session, session.get(Account, owing.id)).available.format() == "-11.60"
    # a re-run changes nothing; the next month has nothing left to bill
    close_period(shop, MAR, now=CLOSE_AT + timedelta(hours=2), grace=GRACE)
    close_period(shop, APR, now=APR_CLOSE, grace=GRACE)
    assert owing.id not in by_account(session, APR)
    assert ledger_balance(session, "receivable:invoiced", owing.id) == "21.60"
    # a debt booked after April was closed is on the next invoice, and only it
    with shop.begin() as s:
        book_debt(s, owing.id, "1.25", "dispute-fee-1", "dispute lost", at(3, 12, APR))
    may = APR.next()
    close_period(shop, may, now=may.end + timedelta(days=1), grace=GRACE)
    (line,) = lines_of(session, by_account(session, may)[owing.id].id)
    assert (line.kind, money(line.amount)) == ("reversal_debt", "1.25")
    assert ledger_balance(session, "receivable:reversals", owing.id) == "0.00"


def test_a_crash_after_the_move_loses_it_with_the_invoice_and_the_rerun_bills_it_once(
    owing, shop, session, monkeypatch
):
    real = close_mod.close_account

    def crashing(s, account_id, period, **kw):
        invoice = real(s, account_id, period, **kw)  # finalized and moved...
        raise RuntimeError("killed (injected)")  # ...and lost with its transaction
        return invoice  # pragma: no cover

    monkeypatch.setattr(close_mod, "close_account", crashing)
    with pytest.raises(RuntimeError):
        close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    assert ledger_balance(session, "receivable:reversals", owing.id) == "18.00"
    assert session.scalar(select(sa.func.count()).select_from(Invoice)) == 0
    monkeypatch.setattr(close_mod, "close_account", real)
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    assert ledger_balance(session, "receivable:reversals", owing.id) == "0.00"
    assert ledger_balance(session, "receivable:invoiced", owing.id) == "21.60"
    entries = session.scalar(
        sa.text("SELECT count(*) FROM ledger_entries WHERE metadata->>'kind' = 'invoice'")
    )
    assert entries == 1


def test_a_draft_keeps_its_share_and_a_later_draft_bills_only_what_is_new(owing, shop, session):
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE, finalize=False)
    march = by_account(session)[owing.id]
    assert march.status == "draft"
    assert ledger_balance(session, "receivable:reversals", owing.id) == "18.00"  # not moved yet
    with shop.begin() as s:
        book_debt(s, owing.id, "2.00", "late-chargeback", "chargeback", at(2, 12, APR))
    close_period(shop, APR, now=APR_CLOSE, grace=GRACE, finalize=False)
    april = by_account(session, APR)[owing.id]
    assert [(ln.kind, money(ln.amount)) for ln in lines_of(session, april.id)] == [
        ("reversal_debt", "2.00")  # the 18.00 is the March draft's
    ]
    with shop.begin() as s:
        finalize_draft(s, april.id, now=APR_CLOSE)
    with shop.begin() as s:
        finalize_draft(s, march.id, now=APR_CLOSE)
    with shop.begin() as s:
        again = finalize_draft(s, march.id, now=APR_CLOSE)  # repeat-safe
        assert again.status == "finalized"
    assert ledger_balance(session, "receivable:reversals", owing.id) == "0.00"
    assert ledger_balance(session, "receivable:invoiced", owing.id) == "23.60"  # 21.60 + 2.00


def test_voiding_an_invoice_puts_the_debt_back_for_the_next_one(owing, shop, session):
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    inv = by_account(session)[owing.id]
    with shop.begin() as s:
        void_invoice(s, inv.id, reason="issued in error", now=CLOSE_AT + timedelta(days=1))
    assert ledger_balance(session, "receivable:invoiced", owing.id) == "0.00"
    assert ledger_balance(session, "receivable:reversals", owing.id) == "18.00"
    assert house_total(session, "tax:payable") == "0.00"
    close_period(shop, APR, now=APR_CLOSE, grace=GRACE)
    (line,) = lines_of(session, by_account(session, APR)[owing.id].id)
    assert (line.kind, money(line.amount)) == ("reversal_debt", "18.00")


def test_refund_debts_age_as_not_invoiced_until_an_invoice_bills_them(owing, shop, session):
    before = receivables_aging(session, currency="USD", as_of=at(31).date())
    assert [(r["account_id"], r["bucket"], r["open"]) for r in before.rows] == [
        (owing.id, "not_invoiced", "18.00")
    ]
    assert before.summary["not_invoiced"] == "18.00" and before.summary["ties"] is True
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    after = receivables_aging(session, currency="USD", as_of=CLOSE_AT.date())
    assert [(r["invoice"], r["bucket"], r["open"]) for r in after.rows] == [
        ("INV-USD-2026-000001", "current", "21.60")
    ]
    assert (after.summary["not_invoiced"], after.summary["total"]) == ("0.00", "21.60")
    assert after.summary["ties"] is True
    # as of the end of March the debt was still not invoiced
    again = receivables_aging(session, currency="USD", as_of=at(31).date())
    assert [r["bucket"] for r in again.rows] == ["not_invoiced"]


def test_the_pdf_shows_the_tax_of_prepaid_lines_and_its_base(taxed, shop, session):
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    inv = by_account(session)[taxed.id]
    pdf = render_invoice_pdf(session, inv, issuer=Issuer(name="Token Operator Ltd"))
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "$3.80 (20% of $19.00)" in text  # the plan fee: 1.00 of it was paid with bonus
    assert "$0.00 (20% of $0.00)" in text  # the package: all bonus
    assert "$3.82 USD" in text  # amount due: the tax


def test_the_close_waits_for_a_refund_in_flight_and_bills_its_debt_once(
    owing, shop, session_factory, session
):
    """A refund writes its debt under the account row.

    The close locks that row after the usage gate, so it bills the debt of a refund that commits
    while it waits, exactly once.
    """
    refunding = session_factory()
    refunding.begin()
    lock_accounts(refunding, [owing.id])
    book_debt(refunding, owing.id, "0.50", "in-flight", "chargeback in flight", at(20))
    results: list[object] = []
    closer = threading.Thread(
        target=lambda: results.append(close_period(shop, MAR, now=CLOSE_AT, grace=GRACE))
    )
    closer.start()
    waiting = lock_waiters(session, "transactionid", "tuple")  # the close waits on the account row
    refunding.commit()
    refunding.close()
    closer.join(30)
    assert waiting == 1 and len(results) == 1
    lines = lines_of(session, by_account(session)[owing.id].id)
    (line,) = [ln for ln in lines if ln.kind == "reversal_debt"]
    assert money(line.amount_exact) == "18.50"
    assert ledger_balance(session, "receivable:reversals", owing.id) == "0.00"
