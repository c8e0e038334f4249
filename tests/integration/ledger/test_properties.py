"""Property and concurrency tests of the ledger on real PostgreSQL."""

from __future__ import annotations

import random
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import OperationalError

from ledger.accounts import get_balance, open_account
from ledger.amounts import Amount
from ledger.audit import find_violations, trial_balance
from ledger.errors import InsufficientFunds
from ledger.journal import Leg, post_entry, transfer
from ledger.models import AccountType
from ledger.units import TOKENS, currency

UNITS = [currency("USD"), currency("CNY"), TOKENS]
TYPES = list(AccountType)


@st.composite
def balanced_entries(draw):
    """Entries of 2..6 legs in one unit that sum to zero (on accounts that allow negatives)."""
    unit_index = draw(st.integers(0, len(UNITS) - 1))
    n = draw(st.integers(2, 6))
    amounts = [draw(st.integers(-(10**24), 10**24).filter(lambda x: x != 0)) for _ in range(n - 1)]
    last = -sum(amounts)
    if last == 0:
        amounts[0] += 1
        last = -sum(amounts)
    amounts.append(last)
    accounts = [draw(st.integers(0, 5)) for _ in range(n)]
    return unit_index, list(zip(accounts, amounts, strict=True))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=st.lists(balanced_entries(), min_size=1, max_size=8))
def test_random_balanced_entries_keep_trial_balance_zero(session_factory, entries):
    with session_factory.begin() as s:
        accounts = {
            (u.code, i): open_account(
                s,
                code=f"acct:{i}",
                type=TYPES[i % len(TYPES)],
                unit=u,
                track_balance=i != 5,
            )
            for u in UNITS
            for i in range(6)
        }
        # the database outlives one hypothesis example: compare against the starting balances
        before = {ref.id: get_balance(s, ref.id).posted.atoms for ref in accounts.values()}
        for unit_index, legs in entries:
            u = UNITS[unit_index]
            post_entry(s, [Leg(accounts[(u.code, a)].id, Amount(x, u)) for a, x in legs])
    with session_factory() as s:
        assert find_violations(s) == []
        totals: dict[tuple[str, str], int] = {}
        for row in trial_balance(s):
            totals[(row.book, row.unit)] = totals.get((row.book, row.unit), 0) + row.net.atoms
        assert all(v == 0 for v in totals.values()), totals
        # every account's balance equals the sum of what the test posted to it
        expected: dict[int, int] = {}
        for unit_index, legs in entries:
            u = UNITS[unit_index]
            for a, x in legs:
                ref = accounts[(u.code, a)]
                expected[ref.id] = expected.get(ref.id, 0) + x
        for ref in accounts.values():
            net_debit = expected.get(ref.id, 0)
            want = net_debit if ref.type.debit_normal else -net_debit
            assert get_balance(s, ref.id).posted.atoms - before[ref.id] == want


def test_sixteen_connections_moving_money_between_hot_accounts(session_factory):
    usd = currency("USD")
    n_accounts, start, workers, moves = 4, 1_000, 16, 40
    with session_factory.begin() as s:
        source = open_account(s, code="cash:bank", type=AccountType.ASSET, unit=usd)
        wallets = [
            open_account(
                s,
                code="customer:prepaid",
                type=AccountType.LIABILITY,
                unit=usd,
                owner_id=f"c{i}",
                forbid_negative=True,
            )
            for i in range(n_accounts)
        ]
        for w in wallets:
            post_entry(s, transfer(source, w, Amount.parse(str(start), usd)))
    errors: list[BaseException] = []
    refused = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(workers)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        barrier.wait()
        for _ in range(moves):
            a, b, c = rng.sample(wallets, 3)
            amount = Amount.parse(str(rng.randint(1, 300)), usd)
            legs = [Leg(a.id, amount * 2), Leg(b.id, -amount), Leg(c.id, -amount)]
            rng.shuffle(legs)  # legs in arbitrary order: the ledger locks in id order anyway
            try:
                with session_factory.begin() as s:
                    post_entry(s, legs)
            except InsufficientFunds:
                with lock:
                    refused[0] += 1
            except OperationalError as exc:  # a deadlock or serialization error would land here
                errors.append(exc)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert refused[0] < workers * moves  # most moves went through; some were refused
    with session_factory() as s:
        balances = [get_balance(s, w.id).posted for w in wallets]
        assert all(b.atoms >= 0 for b in balances)
        assert sum(b.atoms for b in balances) == n_accounts * start * 10**18
        assert find_violations(s) == []
