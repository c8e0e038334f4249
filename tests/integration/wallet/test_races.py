"""Real concurrent connections against one wallet: every path that changes a wallet locks its
account rows first, in id order, so they neither deadlock nor lose an update."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from tests.integration.wallet.conftest import MODEL, funded, package, usage
from wallet.authorizations import authorize
from wallet.balance import balance_of
from wallet.charging import charge_batch
from wallet.packages import buy_package
from wallet.topups import record_topup


def race(factory: sessionmaker[Session], jobs: list[Callable[[Session], str]]) -> Counter[str]:
    """Run each job in its own thread and transaction, all released at once; count outcomes
    (an exception's class name counts as an outcome, so a deadlock would show)."""
    barrier = threading.Barrier(len(jobs))
    out: Counter[str] = Counter()
    lock = threading.Lock()

    def run(job: Callable[[Session], str]) -> None:
        barrier.wait()
        try:
            with factory.begin() as s:
                result = job(s)
        except Exception as exc:
            result = type(exc).__name__
        with lock:
            out[result] += 1

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_credit_limit_holds_under_concurrency(priced: Session, session_factory):
    acc = funded(priced, None, credit_limit="0.15")  # exactly 10 records of 0.015

    def spend(n: int) -> Callable[[Session], str]:
        def job(s: Session) -> str:
            statuses = [charge_batch(s, [usage(f"o{n}-{j}", acc)])[0].status for j in range(3)]
            return ",".join(statuses)

        return job

    outcomes = race(session_factory, [spend(n) for n in range(16)])
    charged = sum(k.split(",").count("charged") * v for k, v in outcomes.items())
    assert charged == 10, outcomes
    b = balance_of(priced, acc)
    assert (b.overage_unbilled.format(), b.available.format()) == ("0.15", "0.00")


def test_sub_account_holds_and_charges_race_without_deadlock(priced: Session, session_factory):
    reseller = funded(priced, "100.00", kind="reseller")
    sub = funded(priced, "100.00", parent_id=reseller.id)

    def authorize_job(s: Session) -> str:
        a = authorize(
            s,
            account_id=sub.id,
            model=MODEL,
            estimated_input_tokens=0,
            max_output_tokens=1000,
            ttl=timedelta(minutes=10),
        )
        return a.status

    def charge_job(n: int) -> Callable[[Session], str]:
        return lambda s: charge_batch(s, [usage(f"c{n}", sub), usage(f"r{n}", reseller)])[0].status

    jobs: list[Callable[[Session], str]] = []
    for n in range(8):
        jobs += [authorize_job, charge_job(n)]
    outcomes = race(session_factory, jobs)
    assert outcomes == Counter({"approved": 8, "charged": 8}), outcomes


def test_holds_race_top_ups_and_purchases_without_deadlock(priced: Session, session_factory):
    package(priced, price="0.10")
    acc = funded(priced, "10.00")

    def authorize_job(s: Session) -> str:
        return authorize(
            s,
            account_id=acc.id,
            model=MODEL,
            estimated_input_tokens=0,
            max_output_tokens=1000,
            ttl=timedelta(minutes=10),
        ).status

    def topup_job(s: Session) -> str:
        return record_topup(s, acc.id, amount="1.00", method="bank_transfer").topup.status

    def buy_job(s: Session) -> str:
        buy_package(s, acc.id, "pk")
        return "bought"

    jobs: list[Callable[[Session], str]] = []
    for _ in range(6):
        jobs += [authorize_job, topup_job, buy_job]
    outcomes = race(session_factory, jobs)
    assert outcomes == Counter({"approved": 6, "succeeded": 6, "bought": 6}), outcomes
    b = balance_of(priced, acc)
    # 10 + 6 top-ups - 6 packages at 0.10; holds only reserve, the posted balance is exact
    assert b.paid.format() == "15.40"
