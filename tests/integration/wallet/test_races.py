"""Real concurrent connections against one wallet.

Every path that changes a wallet locks its account rows first, in id order, so they neither deadlock
nor lose an update.
"""

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
    """Run each job in its own thread and transaction, all released at once.

    Count outcomes (an exception's class name counts as an outcome, so a deadlock would show).
    """
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


# -- multi-capture authorizations ---------------------------------------------------------------


def test_captures_increments_top_ups_and_a_void_race_on_one_grant(priced: Session, session_factory):
    from decimal import Decimal

    from wallet.authorizations import grant, increment, void_authorization

    acc = funded(priced, "1.00")
    g = grant(priced, account_id=acc.id, amount="0.30", ttl=timedelta(minutes=10))
    priced.commit()
    billed: list[Decimal] = []
    lock = threading.Lock()

    def capture(n: int) -> Callable[[Session], str]:
        def job(s: Session) -> str:
            rs = charge_batch(s, [usage(f"g{n}-{j}", acc, authorization_id=g.id) for j in range(3)])
            with lock:
                billed.extend(Decimal(r.billed.format()) for r in rs if r.status == "charged")
            return ",".join(r.status for r in rs)

        return job

    def more(s: Session) -> str:
        return increment(s, g.id, amount="0.10").status

    def top_up(s: Session) -> str:
        record_topup(s, acc.id, amount="0.50", method="bank_transfer")
        return "topped_up"

    outcomes = race(session_factory, [capture(n) for n in range(12)] + [more] * 4 + [top_up] * 2)
    assert not [k for k in outcomes if "Error" in k or "Deadlock" in k], outcomes
    assert len(billed) == 36 and all(b == Decimal("0.015") for b in billed)
    void_authorization(priced, g.id)
    priced.commit()
    b = balance_of(priced, acc)
    assert Decimal(b.paid.format()) == Decimal("2.00") - sum(billed)
    assert b.held.format() == "0.00"


def test_grants_racing_on_one_account_never_pass_the_hard_stop(priced: Session, session_factory):
    from decimal import Decimal

    from wallet.authorizations import grant

    acc = funded(priced, "0.30")  # exactly 20 records of 0.015
    billed: list[Decimal] = []
    lock = threading.Lock()

    def gateway(n: int) -> Callable[[Session], str]:
        def job(s: Session) -> str:
            g = grant(s, account_id=acc.id, amount="0.06", ttl=timedelta(minutes=10))
            if g.status != "approved":
                return "declined"
            got = 0
            rs = charge_batch(s, [usage(f"h{n}-{j}", acc, authorization_id=g.id) for j in range(6)])
            for r in rs:
                if r.status == "charged":
                    got += 1
                    with lock:
                        billed.append(Decimal(r.billed.format()))
            return f"granted:{got}"

        return job

    outcomes = race(session_factory, [gateway(n) for n in range(8)])
    assert not [k for k in outcomes if "Error" in k or "Deadlock" in k], outcomes
    assert sum(billed) == Decimal("0.30"), (outcomes, billed)
    b = balance_of(priced, acc)
    assert (b.paid.format(), b.available.format(), b.held.format()) == ("0.00", "0.00", "0.00")


def test_the_expiry_job_and_late_captures_race_without_losing_an_atom(
    priced: Session, session_factory
):
    from datetime import UTC, datetime

    from wallet.authorizations import expire_authorizations, grant

    acc = funded(priced, "1.00")
    t0 = datetime.now(UTC)
    grants = [
        grant(priced, account_id=acc.id, amount="0.05", ttl=timedelta(minutes=10), at=t0)
        for _ in range(6)
    ]
    priced.commit()
    after = t0 + timedelta(minutes=11)

    def capture(n: int) -> Callable[[Session], str]:
        def job(s: Session) -> str:
            g = grants[n % len(grants)]
            made = t0 + timedelta(minutes=9)
            (r,) = charge_batch(s, [usage(f"x{n}", acc, at=made, authorization_id=g.id)], now=after)
            return r.status

        return job

    def expire(s: Session) -> str:
        return f"expired:{len(expire_authorizations(s, now=after))}"

    outcomes = race(session_factory, [capture(n) for n in range(12)] + [expire] * 3)
    assert outcomes["charged"] == 12, outcomes
    b = balance_of(priced, acc)
    assert (b.paid.format(), b.held.format()) == ("0.82", "0.00")
