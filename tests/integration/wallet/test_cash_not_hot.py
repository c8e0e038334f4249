"""Bank top-ups of different customers share no locked row.

The book's ``cash:bank`` keeps no cached balance (summed from its postings, like revenue and
promotions), so a top-up whose transaction is still open does not hold up another customer's (real
concurrent connections).
"""

from __future__ import annotations

import threading

from sqlalchemy import select, text

from ledger.accounts import get_balance
from ledger.models import LedgerAccount
from tests.books import assert_books_tie
from wallet.accounts import create_account
from wallet.topups import record_topup


def test_a_bank_top_up_in_flight_does_not_block_another_customers(session_factory):
    with session_factory.begin() as s:
        a = create_account(s, name="A", currency="USD").id
        b = create_account(s, name="B", currency="USD").id
        record_topup(s, a, amount="1.00", method="bank_transfer")  # opens the house accounts
    first = session_factory()
    try:
        record_topup(first, a, amount="10.00", method="bank_transfer")  # not committed yet
        result: dict[str, object] = {}

        def second() -> None:
            with session_factory() as s:
                # a second top-up of another customer must not wait for the first one
                s.execute(text("SET LOCAL lock_timeout = '2s'"))
                try:
                    record_topup(s, b, amount="20.00", method="bank_transfer")
                    s.commit()
                    result["ok"] = True
                except Exception as exc:  # the old cached cash:bank row: lock timeout
                    result["error"] = exc

        t = threading.Thread(target=second)
        t.start()
        t.join(timeout=30)
        assert result == {"ok": True}, result
        first.commit()
    finally:
        first.close()
    with session_factory() as s:
        cash = s.scalars(
            select(LedgerAccount).where(
                LedgerAccount.code == "cash:bank", LedgerAccount.book == "operator"
            )
        ).one()
        assert cash.track_balance is False and cash.debits_posted == 0  # no cached counters
        assert get_balance(s, cash.id).posted.format() == "31.00"  # summed from postings
        assert_books_tie(s)


def test_concurrent_bank_top_ups_of_many_customers_are_all_booked(session_factory):
    with session_factory.begin() as s:
        ids = [create_account(s, name=f"C{i}", currency="USD").id for i in range(16)]
    barrier = threading.Barrier(len(ids))
    errors: list[BaseException] = []

    def run(account_id: str) -> None:
        barrier.wait(timeout=30)
        try:
            for n in range(5):
                with session_factory.begin() as s:
                    record_topup(
                        s,
                        account_id,
                        amount="2.50",
                        method="bank_transfer",
                        reference=f"{account_id}-{n}",
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with session_factory() as s:
        cash = s.scalars(
            select(LedgerAccount).where(
                LedgerAccount.code == "cash:bank", LedgerAccount.book == "operator"
            )
        ).one()
        assert get_balance(s, cash.id).posted.format() == "200.00"  # 16 x 5 x 2.50
        assert_books_tie(s)
