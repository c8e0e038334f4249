"""Tax on prepaid consumption settled from the prepaid balance when the operator says so.

The account's setting is ``settle_from_prepaid``: the invoice is finalized paid, the paid credit
(never the bonus) pays it, the ledger and the rollforward show it; by default it is owed.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from invoicing.close import close_period
from invoicing.lifecycle import open_balance
from invoicing.models import InvoicePayment
from invoicing.reports import prepaid_liability
from tests.books import assert_books_tie
from wallet.balance import balance_of
from wallet.models import Account, Topup
from wallet.refunds import reverse_topup

from .conftest import (
    APR,
    CLOSE_AT,
    MAR,
    at,
    by_account,
    money,
    new_account,
    package,
    subscribe,
    topup,
    usd,
)

GRACE = timedelta(days=1)


def prepaid_customer(shop, usage, *, settle: bool, amount: str = "100.00") -> Account:
    acc = new_account(
        shop, "Taxed", billing={"tax_profile_id": "vat20", "settle_from_prepaid": settle}
    )
    topup(shop, acc, amount, at(1))  # + 10 % bonus from 100.00
    package(shop, acc, at(2))  # 9.00 (bonus first)
    subscribe(shop, acc, at(2, 13))  # 20.00: 1.00 bonus, 19.00 paid credit -> 3.80 tax
    assert usage(acc, at(7), count=3) == ["charged"] * 3  # plan quota and package tokens
    return acc


def test_the_tax_invoice_is_paid_from_the_paid_credit_when_the_setting_says_so(
    shop, usage, session
):
    acc = prepaid_customer(shop, usage, settle=True)
    before = balance_of(session, session.get(Account, acc.id))
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    inv = by_account(session)[acc.id]
    assert (inv.status, money(inv.amount_due), money(open_balance(inv))) == ("paid", "3.80", "0.00")
    (pay,) = session.scalars(select(InvoicePayment).where(InvoicePayment.invoice_id == inv.id))
    assert (pay.method, money(pay.amount), pay.reference) == (
        "prepaid_balance",
        "3.80",
        f"prepaid-balance:{inv.id}",
    )
    session.expire_all()
    after = balance_of(session, session.get(Account, acc.id))
    assert (before.paid - after.paid).format() == "3.80"  # paid credit, never the bonus
    assert after.bonus == before.bonus
    roll = {r["line"]: r for r in prepaid_liability(session, period=MAR, currency="USD").rows}
    # the close is effective on April 2nd: it is April's movement
    april = prepaid_liability(session, period=APR, currency="USD")
    assert april.summary["ties"] is True
    lines = {r["line"]: r for r in april.rows}
    assert lines["invoices_paid"]["paid"] == "-3.80"
    assert roll["invoices_paid"]["paid"] == "0.00"
    assert_books_tie(session, at=[at(1), CLOSE_AT])


def test_by_default_the_tax_is_owed_and_short_credit_pays_what_it_can(shop, usage, session):
    owed = prepaid_customer(shop, usage, settle=False)
    short = prepaid_customer(shop, usage, settle=True)
    # the second customer gets all but 1.00 of its paid credit refunded before the close
    left = balance_of(session, session.get(Account, short.id)).paid
    with shop.begin() as s:
        t = s.scalars(select(Topup).where(Topup.account_id == short.id)).one()
        reverse_topup(s, t.id, left - usd("1.00"), effective_at=at(8))
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    invs = by_account(session)
    assert (invs[owed.id].status, money(open_balance(invs[owed.id]))) == ("finalized", "3.80")
    assert (invs[short.id].status, money(open_balance(invs[short.id]))) == ("finalized", "2.80")
    session.expire_all()
    assert balance_of(session, session.get(Account, short.id)).paid.format() == "0.00"
    assert_books_tie(session, at=[at(1), CLOSE_AT])
