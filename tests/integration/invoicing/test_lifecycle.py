"""After the close.

Payments (idempotent per reference), credit notes (own series, ledger entries, wallet credit), void,
overdue; reports that tie to the ledger; the PDF.
"""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
import sqlalchemy as sa
from pypdf import PdfReader

from invoicing.close import close_period
from invoicing.credit_notes import CreditRequest, issue_credit_note
from invoicing.documents import Issuer, render_invoice_pdf
from invoicing.errors import CreditTooLarge, InvoiceState, PaymentTooLarge
from invoicing.invoice_payments import record_payment, reverse_payment
from invoicing.lifecycle import is_overdue, open_balance, void_invoice
from invoicing.models import Invoice
from invoicing.reports import (
    prepaid_liability,
    receivables_aging,
    reseller_statement,
    revenue_by_model,
    trial_balance,
)
from ledger.errors import IdempotencyConflict, InvalidAmount
from wallet.balance import balance_of
from wallet.models import Account

from .conftest import CLOSE_AT, MAR, at, by_account, lines_of, new_account, usd

GRACE = timedelta(days=1)


@pytest.fixture
def closed(month, shop):
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    return month


def invoice_of(session, account) -> Invoice:
    return by_account(session)[account.id]


def test_a_reversed_payment_is_owed_again_once_and_no_more_than_was_paid(closed, shop, session):
    globex = closed["globex"]
    inv_id = invoice_of(session, globex).id
    with shop.begin() as s:
        paid = record_payment(s, inv_id, amount=usd("1.31"), method="stripe", reference="pi_1")
    session.expire_all()
    assert session.get(Invoice, inv_id).status == "paid"
    for _ in range(2):  # the same key twice: once
        with shop.begin() as s:
            reverse_payment(s, paid.payment.id, usd("0.31"), key="refund:pi_1:31", reason="r")
    session.expire_all()
    inv = session.get(Invoice, inv_id)
    assert (inv.status, inv.paid_at, open_balance(inv)) == ("finalized", None, usd("0.31").atoms)
    with shop.begin() as s, pytest.raises(InvalidAmount):
        reverse_payment(s, paid.payment.id, usd("1.01"), key="refund:pi_1:132", reason="r")
    with shop.begin() as s, pytest.raises(InvalidAmount):
        reverse_payment(s, paid.payment.id, usd("0.001"), key="refund:pi_1:x", reason="r")
    with shop.begin() as s:
        reverse_payment(s, paid.payment.id, usd("1.00"), key="refund:pi_1:131", reason="r")
    session.expire_all()
    inv = session.get(Invoice, inv_id)
    assert (inv.status, inv.amount_paid, open_balance(inv)) == ("finalized", 0, usd("1.31").atoms)
    # The receivable and cash:stripe are back where they were before the payment.
    moved = session.execute(
        sa.text(
            "SELECT a.code, sum(p.amount) FROM ledger_postings p JOIN ledger_accounts a"
            " ON a.id = p.account_id JOIN ledger_entries e ON e.id = p.entry_id"
            " WHERE e.metadata->>'invoice_id' = :inv"
            " AND e.metadata->>'kind' IN ('invoice_payment', 'invoice_payment_reversal')"
            " GROUP BY a.code ORDER BY a.code"
        ),
        {"inv": inv_id},
    ).all()
    assert [tuple(r) for r in moved] == [("cash:stripe", 0), ("receivable:invoiced", 0)]


def test_payments_are_idempotent_per_reference_and_settle_the_invoice(closed, shop, session):
    globex = closed["globex"]
    inv_id = invoice_of(session, globex).id
    with shop.begin() as s:
        first = record_payment(
            s, inv_id, amount=usd("1.00"), method="bank_transfer", reference="TX-1"
        )
    with shop.begin() as s:
        again = record_payment(
            s, inv_id, amount=usd("1.00"), method="bank_transfer", reference="TX-1"
        )
    assert again.replayed and again.payment.id == first.payment.id
    with shop.begin() as s, pytest.raises(IdempotencyConflict):
        record_payment(s, inv_id, amount=usd("0.31"), method="bank_transfer", reference="TX-1")
    with shop.begin() as s, pytest.raises(PaymentTooLarge):
        record_payment(s, inv_id, amount=usd("0.32"), method="bank_transfer", reference="TX-2")
    with shop.begin() as s:
        record_payment(s, inv_id, amount=usd("0.31"), method="bank_transfer", reference="TX-2")
    session.expire_all()
    inv = session.get(Invoice, inv_id)
    assert inv.status == "paid" and open_balance(inv) == 0
    received = session.execute(
        sa.text(
            "SELECT -sum(p.amount) FROM ledger_postings p JOIN ledger_accounts a"
            " ON a.id = p.account_id JOIN ledger_entries e ON e.id = p.entry_id"
            " WHERE a.code = 'receivable:invoiced' AND e.metadata->>'kind' = 'invoice_payment'"
        )
    ).scalar_one()
    assert received == 131 * 10**16


def test_credit_notes_have_their_own_series_and_ledger_entries(closed, shop, session):
    globex, acme = closed["globex"], closed["acme"]
    g = invoice_of(session, globex)
    overage = lines_of(session, g.id)[0]
    with shop.begin() as s:
        cn1 = issue_credit_note(
            s, g.id, requests=[CreditRequest(overage.id, usd("0.50"))], reason="goodwill"
        )
    assert (cn1.number, cn1.net, cn1.tax, cn1.to_receivable) == (
        "CN-USD-2026-000001",
        50 * 10**16,
        10 * 10**16,
        60 * 10**16,
    )
    with shop.begin() as s, pytest.raises(CreditTooLarge):
        issue_credit_note(s, g.id, requests=[CreditRequest(overage.id, usd("0.60"))], reason="x")
    with shop.begin() as s:  # the rest of the line: exactly its remaining tax
        cn2 = issue_credit_note(s, g.id, requests=[CreditRequest(overage.id, None)], reason="sla")
    assert (cn2.number, cn2.net, cn2.tax) == ("CN-USD-2026-000002", 59 * 10**16, 12 * 10**16)
    session.expire_all()
    g = session.get(Invoice, g.id)
    assert g.status == "paid" and open_balance(g) == 0 and g.credited == 131 * 10**16
    # a prepaid line credited goes back to the prepaid balance, as the kinds that paid it: the
    # plan fee (20.00) was paid 1.00 from bonus, so a quarter of it goes back as bonus
    a = invoice_of(session, acme)
    plan_line = lines_of(session, a.id)[0]
    assert plan_line.details["from_bonus"] == "1.00"
    before = balance_of(session, session.get(Account, acme.id))
    with shop.begin() as s:
        cn3 = issue_credit_note(
            s, a.id, requests=[CreditRequest(plan_line.id, usd("5.00"))], reason="outage"
        )
    assert (cn3.to_wallet, cn3.to_bonus, cn3.to_receivable) == (5 * 10**18, 25 * 10**16, 0)
    session.expire_all()
    after = balance_of(session, session.get(Account, acme.id))
    assert (after.paid - before.paid).format() == "4.75"
    assert (after.bonus - before.bonus).format() == "0.25"
    info = lines_of(session, a.id)[2]
    with shop.begin() as s, pytest.raises(InvoiceState):
        issue_credit_note(s, a.id, requests=[CreditRequest(info.id, None)], reason="no")


def test_void_writes_off_what_was_due(closed, shop, session):
    resell = closed["resell"]
    inv = invoice_of(session, resell)
    with shop.begin() as s:
        void_invoice(s, inv.id, reason="issued in error")
    session.expire_all()
    inv = session.get(Invoice, inv.id)
    assert inv.status == "void" and open_balance(inv) == 0
    owed = session.execute(
        sa.text(
            "SELECT debits_posted - credits_posted FROM ledger_accounts"
            " WHERE code = 'receivable:invoiced' AND owner_id = :o"
        ),
        {"o": resell.id},
    ).scalar_one()
    assert owed == 0
    with shop.begin() as s, pytest.raises(InvoiceState):
        record_payment(s, inv.id, amount=usd("1.00"), method="bank_transfer", reference="late")


def test_overdue_after_the_due_date(closed, session):
    g = invoice_of(session, closed["globex"])
    assert not is_overdue(g, g.due_date)
    assert is_overdue(g, g.due_date + timedelta(days=1))


def test_reports_tie_to_the_ledger(closed, shop, session):
    tb = trial_balance(session, currency="USD", as_of=CLOSE_AT)
    assert tb.summary["balanced"] is True
    assert set(tb.summary["books"]) == {"operator", f"reseller:{closed['resell'].id}"}
    assert "code,type,debits" in tb.to_csv().splitlines()[0].replace("book,", "")
    roll = prepaid_liability(session, period=MAR, currency="USD")
    lines = {r["line"]: r for r in roll.rows}
    assert roll.summary["ties"] is True
    assert lines["opening"]["total"] == "0.00"
    # Acme 100 + Resell 10 bought, Acme got 10 bonus; Acme spent 29 on package and plan, the
    # reseller's float paid 10 of its sub-accounts' wholesale usage
    assert (lines["purchased"]["total"], lines["bonus_granted"]["total"]) == ("110.00", "10.00")
    assert lines["consumed"]["total"] == "-39.00"
    assert lines["closing"]["total"] == "81.00"
    sub_book = prepaid_liability(
        session, period=MAR, currency="USD", book=f"reseller:{closed['resell'].id}"
    )
    assert sub_book.summary["ties"] is True
    assert {r["line"]: r["total"] for r in sub_book.rows}["consumed"] == "-36.00"
    rev = revenue_by_model(session, period=MAR, currency="USD")
    assert rev.summary["ties"] is True
    (m,) = rev.rows
    # Globex 1.090014 + the reseller's float 18.00 (wholesale); Acme's usage was plan and package
    assert (m["model"], m["revenue"], m["of_which_overage"]) == ("m", "19.090014", "9.090014")
    aging = receivables_aging(session, currency="USD", as_of=CLOSE_AT.date() + timedelta(days=45))
    assert aging.summary["ties"] is True
    buckets = {r["invoice"]: r["bucket"] for r in aging.rows}
    assert buckets == {"INV-USD-2026-000003": "31-60", "INV-USD-2026-000002": "1-30"}
    assert aging.summary["total"] == "9.31"
    st = reseller_statement(session, reseller_id=closed["resell"].id, period=MAR)
    assert (st.summary["retail_billed"], st.summary["wholesale_charged"], st.summary["margin"]) == (
        "36.00",
        "18.00",
        "18.00",
    )
    assert len(st.rows) == 2


def test_pdf_of_a_real_invoice_shows_number_total_and_cjk_name(shop, usage, session):
    cjk = new_account(
        shop,
        "深圳市星河科技有限公司",
        credit_limit="100",
        billing={"net_terms_days": 30, "tax_profile_id": "vat20"},
    )
    assert usage(cjk, at(4), input_tokens=1_000_000, output_tokens=100_000) == ["charged"]  # 4.50
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    inv = invoice_of(session, cjk)
    assert inv.amount_due == 540 * 10**16  # 4.50 + 20 % tax
    pdf = render_invoice_pdf(session, inv, issuer=Issuer(name="Token Operator Ltd"))
    assert pdf.startswith(b"%PDF")
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "INV-USD-2026-000001" in text
    assert "$5.40 USD" in text
    assert "深圳市星河科技有限公司" in text
    assert "Token Operator Ltd" in text
