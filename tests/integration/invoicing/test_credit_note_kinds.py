"""Credit notes give back credit of the kind that paid the line.

Bonus as bonus (with the bonus's validity), paid as paid, and for postpaid (due) lines the
receivable is reduced. A credit note never turns promotional credit into refundable money.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from invoicing.chart import receivable_invoiced
from invoicing.close import close_period
from invoicing.credit_notes import CreditRequest, issue_credit_note
from invoicing.lifecycle import open_balance
from invoicing.models import Invoice
from ledger.accounts import get_balance
from plans import catalog
from tests.books import assert_books_tie
from wallet.balance import balance_of
from wallet.models import Account, CreditLot

from .conftest import (
    CLOSE_AT,
    MAR,
    at,
    by_account,
    lines_of,
    money,
    new_account,
    package,
    topup,
    usd,
)

GRACE = timedelta(days=1)


def wallet(session, acc):
    session.expire_all()
    b = balance_of(session, session.get(Account, acc.id))
    return b.paid.format(), b.bonus.format()


def bonus_rule(shop, days: int) -> None:
    with shop.begin() as s:
        catalog.create_topup_bonus_rule(
            s,
            currency="USD",
            tiers=[{"min_amount": "100.00", "bonus_pct": "10", "bonus_expires_days": days}],
            effective_from=at(1, 0),
        )


def test_a_line_paid_with_bonus_is_credited_back_as_bonus_with_its_expiry(shop, session):
    bonus_rule(shop, 400)  # the bonus of a 100.00 top-up on March 1st lasts 400 days
    acc = new_account(shop, "Bonus Buyer")
    topup(shop, acc, "100.00", at(1))  # 100 paid + 10 bonus
    package(shop, acc, at(2))  # 9.00, all from bonus (bonus burns first)
    assert wallet(session, acc) == ("100.00", "1.00")
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    inv = by_account(session)[acc.id]
    (line,) = [ln for ln in lines_of(session, inv.id) if ln.kind == "package"]
    with shop.begin() as s:
        note = issue_credit_note(s, inv.id, requests=[CreditRequest(line.id, None)], reason="x")
        note_id, lot_id = note.id, note.bonus_lot_id
    assert wallet(session, acc) == ("100.00", "10.00")  # back as bonus, not as paid money
    lot = session.get(CreditLot, lot_id)
    original = session.scalars(
        select(CreditLot)
        .where(CreditLot.account_id == acc.id, CreditLot.source_type == "topup")
        .where(CreditLot.kind == "bonus")
    ).one()
    assert (lot.kind, money(lot.remaining), lot.expires_at) == (
        "bonus",
        "9.00",
        original.expires_at,
    )
    assert lot.source_id == note_id
    assert_books_tie(session, at=[at(1)])


def test_bonus_whose_validity_is_over_lapses_instead_of_coming_back(shop, session):
    bonus_rule(shop, 30)  # expired at the end of March: long gone when the note is issued
    acc = new_account(shop, "Lapsed")
    topup(shop, acc, "100.00", at(1))
    package(shop, acc, at(2))
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    inv = by_account(session)[acc.id]
    (line,) = [ln for ln in lines_of(session, inv.id) if ln.kind == "package"]
    before = wallet(session, acc)
    with shop.begin() as s:
        note = issue_credit_note(s, inv.id, requests=[CreditRequest(line.id, None)], reason="x")
        assert (money(note.to_bonus), note.bonus_lot_id, note.lot_id) == ("9.00", None, None)
    assert wallet(session, acc) == before  # neither bonus (it lapsed) nor paid credit
    assert_books_tie(session, at=[at(1)])


def test_a_line_paid_with_paid_credit_is_credited_back_as_paid_credit(shop, session):
    acc = new_account(shop, "Paid Buyer")
    topup(shop, acc, "50.00", at(1))  # below the bonus tier: no bonus
    package(shop, acc, at(2))
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    inv = by_account(session)[acc.id]
    (line,) = [ln for ln in lines_of(session, inv.id) if ln.kind == "package"]
    with shop.begin() as s:
        note = issue_credit_note(
            s, inv.id, requests=[CreditRequest(line.id, usd("4.00"))], reason="x"
        )
        assert (money(note.to_wallet), money(note.to_bonus)) == ("4.00", "0.00")
        lot = s.get_one(CreditLot, note.lot_id)
        assert (lot.kind, money(lot.remaining), lot.expires_at) == ("paid", "4.00", None)
    assert wallet(session, acc) == ("45.00", "0.00")
    assert_books_tie(session, at=[at(1)])


def test_a_postpaid_line_credited_reduces_what_is_owed_and_adds_no_credit(shop, usage, session):
    acc = new_account(shop, "Postpaid", credit_limit="50", billing={"net_terms_days": 30})
    assert usage(acc, at(10), input_tokens=1_000_000, output_tokens=0) == ["charged"]  # 3.00
    close_period(shop, MAR, now=CLOSE_AT, grace=GRACE)
    inv = by_account(session)[acc.id]
    (line,) = [ln for ln in lines_of(session, inv.id) if ln.kind == "overage"]
    with shop.begin() as s:
        note = issue_credit_note(
            s, inv.id, requests=[CreditRequest(line.id, usd("1.00"))], reason="x"
        )
        assert (money(note.to_receivable), money(note.to_wallet)) == ("1.00", "0.00")
    session.expire_all()
    assert money(open_balance(session.get(Invoice, inv.id))) == "2.00"
    assert wallet(session, acc) == ("0.00", "0.00")
    owed = receivable_invoiced(session, session.get_one(Account, acc.id))
    assert get_balance(session, owed.id).posted == usd("2.00")
    assert_books_tie(session, at=[at(1)])
