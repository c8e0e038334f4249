from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from ledger.accounts import balance_as_of, get_balance, open_account
from ledger.audit import find_violations, trial_balance
from ledger.base import utcnow
from ledger.errors import (
    AlreadyReversed,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidEntry,
    MixedUnits,
    UnbalancedEntry,
)
from ledger.holds import reverse_entry
from ledger.journal import Leg, credit, debit, post_entry, transfer
from ledger.models import AccountType, JournalEntry, Posting
from ledger.units import TOKENS, currency

from .conftest import USD, make_chart, top_up, usd


def test_balanced_entry_moves_cached_balances(session, chart):
    top_up(session, chart, "100.00")
    session.commit()
    assert get_balance(session, chart.prepaid.id).posted == usd("100")
    assert get_balance(session, chart.cash.id).posted == usd("100")
    post_entry(session, transfer(chart.prepaid, chart.revenue, usd("0.000123")))
    session.commit()
    b = get_balance(session, chart.prepaid.id)
    assert b.posted == usd("99.999877") and b.available == b.posted and b.version == 2
    # house account: no cached row, balance derived from postings
    assert get_balance(session, chart.revenue.id).posted == usd("0.000123")


def test_unbalanced_entry_rejected_in_python(session, chart):
    with pytest.raises(UnbalancedEntry):
        post_entry(session, [debit(chart.cash, usd("1")), credit(chart.prepaid, usd("0.99"))])
    with pytest.raises(InvalidEntry):
        post_entry(session, [debit(chart.cash, usd("1"))])
    with pytest.raises(MixedUnits):
        post_entry(session, [debit(chart.cash, Amount_tokens(5)), credit(chart.prepaid, usd("1"))])


def Amount_tokens(n: int):
    from ledger.amounts import Amount

    return Amount(n, TOKENS)


def test_unbalanced_entry_rejected_at_commit_even_with_raw_sql(session, chart):
    entry_id = session.scalar(
        sa.text("INSERT INTO ledger_entries (kind) VALUES ('standard') RETURNING id")
    )
    session.execute(
        sa.text(
            "INSERT INTO ledger_postings (entry_id, account_id, unit, book, amount) VALUES"
            " (:e, :a, 'USD', 'operator', 1000), (:e, :b, 'USD', 'operator', -999)"
        ),
        {"e": entry_id, "a": chart.cash.id, "b": chart.prepaid.id},
    )
    with pytest.raises(IntegrityError, match="does not balance"):
        session.commit()
    session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(JournalEntry)) == 0


def test_entry_without_postings_rejected_at_commit(session, chart):
    session.execute(sa.text("INSERT INTO ledger_entries (kind) VALUES ('standard')"))
    with pytest.raises(IntegrityError, match="at least two postings"):
        session.commit()


def test_balance_is_per_book(session):
    a = open_account(session, code="x", type=AccountType.ASSET, unit=USD, book="operator")
    b = open_account(session, code="y", type=AccountType.LIABILITY, unit=USD, book="reseller:r1")
    with pytest.raises(UnbalancedEntry, match="book"):
        post_entry(session, [debit(a, usd("1")), credit(b, usd("1"))])


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_postings SET amount = amount * 2",
        "DELETE FROM ledger_postings",
        "UPDATE ledger_entries SET description = 'x'",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_postings CASCADE",
    ],
)
def test_postings_and_entries_are_append_only(session, chart, statement):
    top_up(session, chart, "5")
    session.commit()
    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(sa.text(statement))
    session.rollback()
    assert get_balance(session, chart.prepaid.id).posted == usd("5")


def test_cached_balance_cannot_be_edited_directly(session, chart):
    with pytest.raises(DBAPIError, match="change only through postings"):
        session.execute(
            sa.text("UPDATE ledger_accounts SET credits_posted = 10 WHERE id = :i"),
            {"i": chart.prepaid.id},
        )


def test_committed_entry_is_sealed(session, chart):
    e = post_entry(session, transfer(chart.cash, chart.prepaid, usd("1")))
    session.commit()
    with pytest.raises(DBAPIError, match="same transaction"):
        session.execute(
            sa.text(
                "INSERT INTO ledger_postings (entry_id, account_id, unit, book, amount) VALUES"
                " (:e, :a, 'USD', 'operator', 1), (:e, :b, 'USD', 'operator', -1)"
            ),
            {"e": e.id, "a": chart.cash.id, "b": chart.prepaid.id},
        )


def test_idempotent_repeat_creates_nothing(session, chart):
    first = post_entry(session, transfer(chart.cash, chart.prepaid, usd("7")), idempotency_key="k1")
    session.commit()
    again = post_entry(session, transfer(chart.cash, chart.prepaid, usd("7")), idempotency_key="k1")
    session.commit()
    assert again.id == first.id and again.replayed and not first.replayed
    assert session.scalar(sa.select(sa.func.count()).select_from(JournalEntry)) == 1
    assert session.scalar(sa.select(sa.func.count()).select_from(Posting)) == 2
    assert get_balance(session, chart.prepaid.id).posted == usd("7")
    with pytest.raises(IdempotencyConflict):
        post_entry(session, transfer(chart.cash, chart.prepaid, usd("8")), idempotency_key="k1")


def test_overdraft_refused_in_python_and_by_the_database(session, chart):
    top_up(session, chart, "1.00")
    session.commit()
    with pytest.raises(InsufficientFunds) as err:
        post_entry(session, transfer(chart.prepaid, chart.revenue, usd("1.01")))
    assert err.value.extra["available"] == "1.00"
    session.rollback()
    # Bypass Python: the CHECK constraint still refuses.
    entry_id = session.scalar(
        sa.text("INSERT INTO ledger_entries (kind) VALUES ('standard') RETURNING id")
    )
    with pytest.raises(IntegrityError, match="no_negative_balance"):
        session.execute(
            sa.text(
                "INSERT INTO ledger_postings (entry_id, account_id, unit, book, amount) VALUES"
                " (:e, :a, 'USD', 'operator', :x), (:e, :b, 'USD', 'operator', -:x)"
            ),
            {"e": entry_id, "a": chart.prepaid.id, "b": chart.revenue.id, "x": 2 * 10**18},
        )


def test_reversal_undoes_and_only_once(session, chart):
    e = post_entry(session, transfer(chart.cash, chart.prepaid, usd("3")))
    session.commit()
    r = reverse_entry(session, e.id, description="mistake")
    session.commit()
    assert get_balance(session, chart.prepaid.id).posted == usd("0")
    assert r.id != e.id
    with pytest.raises(AlreadyReversed):
        reverse_entry(session, e.id)


def test_balance_as_of_a_time(session, chart):
    top_up(session, chart, "10")
    session.commit()
    t1 = session.scalar(sa.select(sa.func.max(JournalEntry.created_at)))
    top_up(session, chart, "5")
    session.commit()
    assert balance_as_of(session, chart.prepaid.id, t1) == usd("10")
    assert balance_as_of(session, chart.prepaid.id, t1 - timedelta(seconds=1)) == usd("0")
    assert balance_as_of(session, chart.prepaid.id, utcnow()) == usd("15")


def test_trial_balance_sums_to_zero_per_book_and_unit(session, chart):
    top_up(session, chart, "100")
    post_entry(session, transfer(chart.prepaid, chart.revenue, usd("12.34")))
    tok_a = open_account(session, code="tokens:granted", type=AccountType.LIABILITY, unit=TOKENS)
    tok_b = open_account(session, code="tokens:issued", type=AccountType.ASSET, unit=TOKENS)
    post_entry(session, transfer(tok_b, tok_a, Amount_tokens(1_000_000)))
    other = make_chart(session, owner="cust_2")
    top_up(session, other, "1")
    session.commit()
    rows = trial_balance(session)
    by_unit: dict[tuple[str, str], int] = {}
    for r in rows:
        by_unit[(r.book, r.unit)] = by_unit.get((r.book, r.unit), 0) + r.net.atoms
    assert by_unit == {("operator", "USD"): 0, ("operator", "TOKENS"): 0}
    assert find_violations(session) == []


def test_open_account_is_idempotent_and_refuses_changed_flags(session):
    prepaid = {
        "code": "customer:prepaid",
        "type": AccountType.LIABILITY,
        "unit": currency("EUR"),
        "owner_id": "c9",
    }
    a = open_account(session, **prepaid, forbid_negative=True)
    b = open_account(session, **prepaid, forbid_negative=True)
    assert a == b
    with pytest.raises(InvalidEntry):
        open_account(session, **prepaid, forbid_negative=False)


def test_leg_helpers():
    assert credit(1, usd("2")) == Leg(1, usd("-2"))


def test_account_cache_forgets_rolled_back_accounts(session_factory):
    usd = currency("USD")
    with session_factory() as s:
        lost = open_account(s, code="tmp", type=AccountType.ASSET, unit=usd, owner_id="x")
        s.rollback()
    with session_factory.begin() as s:
        kept = open_account(s, code="tmp", type=AccountType.ASSET, unit=usd, owner_id="x")
        other = open_account(s, code="tmp2", type=AccountType.LIABILITY, unit=usd, owner_id="x")
        post_entry(s, transfer(kept, other, usd_amount("1")))
    with session_factory() as s:
        assert open_account(s, code="tmp", type=AccountType.ASSET, unit=usd, owner_id="x") == kept
        assert get_balance(s, kept.id).posted == usd_amount("1")
    assert lost.code == kept.code


def usd_amount(value: str):
    return usd(value)


def test_entry_metadata_is_stored(session, chart):
    entry = post_entry(
        session,
        transfer(chart.cash, chart.prepaid, usd("1.00")),
        metadata={"kind": "topup", "account_id": "cust_1"},
    )
    session.commit()
    stored = session.get(JournalEntry, entry.id)
    assert stored is not None and stored.metadata_ == {"kind": "topup", "account_id": "cust_1"}
