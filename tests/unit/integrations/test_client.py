"""The gateway client against an in-memory fake of the tokenwallet API (no database)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from integrations import (
    ClientClosed,
    FlushTimeout,
    Price,
    QueueFull,
    TokenwalletClient,
    UsageResult,
)
from integrations.wire import dumps, loads
from tests.unit.integrations.fake import KEY, PRICE, FakeTokenwallet, serve_http

FAST: dict[str, Any] = {"backoff_base_s": 0.001, "backoff_max_s": 0.01, "in_progress_delay_s": 0.01}


@pytest.fixture
def fake() -> FakeTokenwallet:
    f = FakeTokenwallet()
    f.account("acc", "1000.00")
    return f


def client_for(fake: FakeTokenwallet, **kw: Any) -> TokenwalletClient:
    options: dict[str, Any] = {"flush_interval_s": 10.0, "retry_max_s": 2.0, **FAST}
    options.update(kw)
    return TokenwalletClient("http://tw.test", KEY, transport=fake.transport, **options)


def rec(i: int | str, **kw: Any) -> dict[str, Any]:
    return {
        "id": f"r{i}",
        "account_id": "acc",
        "model": "m",
        "input_tokens": 1000,
        "output_tokens": 1000,
        **kw,
    }


def in_threads(fn: Callable[[], None], n: int) -> None:
    """Run ``fn`` in ``n`` threads at once and wait for them all."""
    threads = [threading.Thread(target=fn) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class Results:
    """An on_result callback that keeps everything it is given."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[dict[str, Any], UsageResult]] = []

    def __call__(self, record: dict[str, Any], result: UsageResult) -> None:
        with self.lock:
            self.items.append((record, result))

    def by_id(self) -> dict[str, UsageResult]:
        with self.lock:
            return {r.id: r for _, r in self.items}


# -- usage batching ------------------------------------------------------------------------------


def test_many_reports_go_in_few_full_batches(fake):
    seen = Results()
    with client_for(fake, max_batch=100, on_result=seen) as c:
        for i in range(1000):
            c.report(rec(i))
        c.flush(timeout=5)
        stats = c.stats()
    assert fake.usage_posts == [100] * 10
    assert (stats.reported, stats.charged, stats.requests, stats.pending) == (1000, 1000, 10, 0)
    assert len(seen.items) == 1000
    billed = seen.items[0][1].billed
    assert billed is not None and billed.amount == Decimal("0.018")
    assert isinstance(billed.amount, Decimal)
    assert fake.balances["acc"] == Decimal("1000.00") - 1000 * Decimal("0.018")


def test_the_flush_interval_sends_without_a_flush(fake):
    seen = Results()
    c = client_for(fake, flush_interval_s=0.02, on_result=seen)
    try:
        for i in range(3):
            c.report(rec(i))
        deadline = time.monotonic() + 2
        while len(seen.items) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(seen.items) == 3
    finally:
        c.close()


def test_report_fills_in_id_and_occurred_at(fake):
    seen = Results()
    with client_for(fake, on_result=seen) as c:
        rid = c.report({"account_id": "acc", "model": "m", "input_tokens": 1, "output_tokens": 0})
    record, result = seen.items[0]
    assert record["id"] == rid == result.id and len(rid) == 36
    assert record["occurred_at"].endswith("+00:00")
    assert result.status == "charged"


def test_503_and_429_with_retry_after_and_a_timeout_are_retried_with_the_same_ids(fake):
    fake.usage_faults.extend(["503", "429", "timeout_before"])
    with client_for(fake, max_batch=10) as c:
        for i in range(10):
            c.report(rec(i))
        c.flush(timeout=5)
        stats = c.stats()
    assert (stats.retries, stats.requests, stats.charged) == (3, 4, 10)
    assert fake.usage_posts == [10]
    assert set(fake.charge_count.values()) == {1}


def test_a_connection_dropped_after_the_server_charged_is_replayed_as_duplicates(fake):
    fake.usage_faults.append("drop_after")
    seen = Results()
    with client_for(fake, max_batch=5, on_result=seen) as c:
        for i in range(5):
            c.report(rec(i))
        c.flush(timeout=5)
        stats = c.stats()
    assert fake.usage_posts == [5, 5]  # the server saw the batch twice
    assert dict(fake.charge_count) == {f"r{i}": 1 for i in range(5)}  # and charged it once
    assert fake.balances["acc"] == Decimal("1000.00") - 5 * Decimal("0.018")
    assert (stats.charged, stats.duplicate, stats.retries) == (0, 5, 1)
    assert len(seen.items) == 5  # one final result per record
    assert all(r.status == "duplicate" and r.billed for _, r in seen.items)


def test_in_progress_records_are_sent_again_later(fake):
    fake.in_progress["r1"] = 2
    seen = Results()
    with client_for(fake, on_result=seen) as c:
        for i in range(3):
            c.report(rec(i))
        c.flush(timeout=5)
        stats = c.stats()
    assert [r.status for r in seen.by_id().values()] == ["charged"] * 3
    assert len(seen.items) == 3
    assert stats.in_progress == 2 and stats.charged == 3
    assert fake.usage_posts == [3, 1, 1]


def test_final_rejections_are_not_retried(fake):
    fake.account("poor", "0.01")
    fake.usage_faults.append("400")
    seen = Results()
    with client_for(fake, on_result=seen) as c:
        c.report(rec(1))
        c.flush(timeout=5)
        c.report(rec(2, account_id="poor"))
        c.report(rec(3, account_id="nobody"))
        c.flush(timeout=5)
        stats = c.stats()
    by_id = seen.by_id()
    assert (by_id["r1"].reason, by_id["r2"].reason, by_id["r3"].reason) == (
        "validation_error",
        "insufficient_funds",
        "unknown_account",
    )
    assert stats.rejected == {"validation_error": 1, "insufficient_funds": 1, "unknown_account": 1}
    assert stats.retries == 0


def test_close_flushes_and_then_refuses_reports(fake):
    c = client_for(fake)  # a 10 s interval: only the close sends them
    for i in range(7):
        c.report(rec(i))
    c.close()
    assert fake.usage_posts == [7]
    with pytest.raises(ClientClosed):
        c.report(rec(99))
    c.close()  # idempotent


def test_a_full_queue_raises_and_drops_nothing(fake):
    fake.gate.clear()  # the server holds the first batch
    c = client_for(fake, max_queue=5, max_batch=5)
    try:
        for i in range(5):
            c.report(rec(i))
        with pytest.raises(QueueFull, match="max_queue=5"):
            c.report(rec(5))
        assert c.stats().pending == 5
        fake.gate.set()
        c.flush(timeout=5)
        c.report(rec(5))
    finally:
        c.close()
    assert sorted(fake.charge_count) == [f"r{i}" for i in range(6)]


def test_close_that_cannot_deliver_says_what_is_left(fake):
    fake.usage_faults.extend(["503"] * 10_000)
    c = client_for(fake)
    c.report(rec(1))
    c.report(rec(2))
    with pytest.raises(FlushTimeout) as info:
        c.close(timeout=0.2)
    assert [r["id"] for r in info.value.pending] == ["r1", "r2"]
    assert c.stats().retries > 0


def test_real_sockets_batching_and_a_dropped_connection():
    fake = FakeTokenwallet()
    fake.account("acc", "10.00")
    fake.usage_faults.append("drop_after")
    with serve_http(fake) as url:
        c = TokenwalletClient(url, KEY, max_batch=50, flush_interval_s=10, **FAST)
        with c:
            for i in range(120):
                c.report(rec(i))
            c.flush(timeout=5)
            stats = c.stats()
    assert fake.usage_posts == [50, 50, 50, 20]
    assert set(fake.charge_count.values()) == {1} and len(fake.charge_count) == 120
    assert (stats.charged, stats.duplicate) == (70, 50)
    assert fake.balances["acc"] == Decimal("10.00") - 120 * Decimal("0.018")


# -- money is never a float ------------------------------------------------------------------------


def test_money_is_never_a_float(fake):
    with client_for(fake) as c:
        with pytest.raises(TypeError, match="float"):
            c.report(rec(1, input_tokens=1.5))
        with pytest.raises(TypeError, match="float"):
            c.grant("acc", amount=0.3)  # type: ignore[arg-type]
        g = c.grant("acc", amount="0.30", model="m")
        assert isinstance(g.remaining, Decimal) and g.remaining == Decimal("0.30")
        assert g.try_spend(Decimal("0.018")) and g.try_spend("0.002")
        with pytest.raises(TypeError):
            g.try_spend(0.01)  # type: ignore[arg-type]
        g.settle(rec("s1"), Decimal("0.02"))
    assert fake.floats_seen == []
    assert loads(b'{"x": 1.10}') == {"x": Decimal("1.10")}
    assert dumps({"a": Decimal("1.10")}) == b'{"a":"1.10"}'
    with pytest.raises(TypeError):
        dumps({"a": 0.1})


def test_price_rates_every_component_exactly():
    price = Price.from_json(PRICE)
    tokens = {
        "input_tokens": 1_000,
        "cache_read_tokens": 10_000,
        "cache_write_5m_tokens": 2_000,
        "cache_write_1h_tokens": 1_000,
        "output_tokens": 3_000,
        "reasoning_tokens": 1_000,
    }
    # 1k*3 + 10k*0.30 + 2k*3.75 + 1k*6 + 2k*15 + 1k*20 = 3+3+7.5+6+30+20 = 69.5 per 1e6
    assert price.cost(tokens) == Decimal("0.0695")
    assert price.cost(tokens, batch=True) == Decimal("0.03475")
    assert price.cost({"output_tokens": 1}) == Decimal("0.000015")
    with pytest.raises(ValueError, match="reasoning"):
        price.cost({"output_tokens": 1, "reasoning_tokens": 2})
    with pytest.raises(TypeError):
        price.cost({"input_tokens": 1.0})  # type: ignore[dict-item]


# -- grants ----------------------------------------------------------------------------------------


def test_a_grant_spends_locally_and_adopts_the_actual_charge(fake):
    with client_for(fake, flush_interval_s=0.01) as c:
        g = c.grant("acc", amount="0.30", model="m")
        assert g.status == "approved" and g.id == "auth_1"
        estimate = g.cost({"input_tokens": 1000, "output_tokens": 1000})
        assert estimate == Decimal("0.018")
        assert g.try_spend(estimate)
        assert g.remaining == Decimal("0.282")
        # the call used fewer tokens than estimated: the actual charge replaces the estimate
        g.settle({"input_tokens": 0, "output_tokens": 1000}, estimate)
        c.flush(timeout=5)
        assert g.remaining == Decimal("0.285")
        assert fake.grants["auth_1"]["captured"] == Decimal("0.015")
        assert fake.calls["grant"] == 1 and fake.calls["increment"] == 0


def test_low_water_increments_and_the_hard_stop_is_exact(fake):
    fake.account("a6", "0.09")  # exactly six calls of 0.015
    with client_for(fake, flush_interval_s=0.005) as c:
        g = c.grant("a6", amount="0.03", model="m", low_water="0.015", increment="0.03")
        cost = g.cost({"input_tokens": 0, "output_tokens": 1000})
        spent = 0
        while g.try_spend(cost):
            spent += 1
            g.settle({"input_tokens": 0, "output_tokens": 1000}, cost)
        assert spent == 6
        assert g.final and g.remaining == 0
        assert not g.try_spend(Decimal("0.000001"))
        c.flush(timeout=5)
    grant = fake.grants[g.id]
    assert fake.calls["increment"] == 2
    assert (grant["held"], grant["captured"], grant["final"]) == (Decimal("0.09"),) * 2 + (True,)
    assert fake.balances["a6"] == 0


def test_sixteen_threads_never_overspend_the_local_view(fake):
    fake.account("one", "1.00")
    with client_for(fake) as c:
        g = c.grant("one", amount="1.00")
        assert g.final  # the account gave everything it had
        unit = Decimal("0.015")
        wins: list[int] = []
        barrier = threading.Barrier(16)

        def spend() -> None:
            barrier.wait()
            n = 0
            while g.try_spend(unit):
                n += 1
            wins.append(n)

        in_threads(spend, 16)
        assert sum(wins) == 66  # 66 * 0.015 = 0.99 <= 1.00 < 67 * 0.015
        assert g.remaining == Decimal("0.01")


def test_sixteen_threads_with_increments_stop_exactly_at_the_funds(fake):
    fake.account("a40", "0.60")  # exactly 40 calls of 0.015
    with client_for(fake, flush_interval_s=0.005) as c:
        g = c.grant("a40", amount="0.15", model="m", low_water="0.05", increment="0.15")
        cost = g.cost({"output_tokens": 1000})
        wins: list[int] = []

        def spend() -> None:
            n = 0
            while g.try_spend(cost):
                n += 1
                g.settle({"input_tokens": 0, "output_tokens": 1000}, cost)
            wins.append(n)

        in_threads(spend, 16)
        c.flush(timeout=5)
    assert sum(wins) == 40
    grant = fake.grants[g.id]
    assert grant["captured"] == grant["held"] == Decimal("0.60")
    assert fake.balances["a40"] == 0 and len(fake.charge_count) == 40


def test_a_duplicate_answer_for_a_grant_record_is_reconciled_by_a_refresh(fake):
    fake.usage_faults.append("drop_after")
    with client_for(fake) as c:
        g = c.grant("acc", amount="0.30", model="m")
        assert g.try_spend(Decimal("0.05"))
        g.settle({"input_tokens": 1000, "output_tokens": 1000}, Decimal("0.05"))
        c.flush(timeout=5)
        assert c.stats().duplicate == 1
        assert fake.calls["get"] == 1
        assert g.remaining == Decimal("0.282")


def test_a_closed_grant_stops_or_renews(fake):
    with client_for(fake, flush_interval_s=0.005) as c:
        g = c.grant("acc", amount="0.10", model="m", low_water="0.05")
        fake.expire(g.id)  # the server closed it; the client learns at the next increment
        assert g.try_spend(Decimal("0.06"))  # below low water: an increment, answered 409
        assert not g.try_spend(Decimal("0.05"))
        assert g.status == "closed"

        r = c.grant("acc", amount="0.10", model="m", low_water="0.05", renew=True)
        first = r.id
        fake.expire(first)
        assert r.try_spend(Decimal("0.06"))
        assert r.try_spend(Decimal("0.05"))  # waits for the 409, then opens a new grant
        assert r.id != first and r.status == "approved"
        # the call still in flight from before the renewal settles against the new grant, so
        # its 0.06 stays reserved there; 0.10 + one increment of 0.10 - 0.06 - 0.05 is left
        assert r.remaining == Decimal("0.09")
        r.settle(rec("late", input_tokens=0, output_tokens=4000), Decimal("0.06"))
        c.flush(timeout=5)
        assert fake.results["rlate"]["billed"]["amount"] == "0.06"
        assert fake.grants[r.id]["captured"] == Decimal("0.06")
        assert r.remaining == Decimal("0.09")


def test_a_locally_expired_grant_is_not_spent(fake):
    fake.account("t", "1.00")
    with client_for(fake) as c:
        g = c.grant("t", amount="0.10", ttl_seconds=1)  # within the 2 s safety margin
        assert not g.try_spend(Decimal("0.01"))


def test_void_flushes_pending_usage_first_and_returns_the_rest(fake):
    fake.account("v", "1.00")
    with client_for(fake) as c:  # a 10 s interval: only the void's flush sends the usage
        with c.grant("v", amount="0.30", model="m") as g:
            for i in range(2):
                assert g.try_spend(Decimal("0.018"))
                g.settle(rec(f"v{i}", account_id="v"), Decimal("0.018"))
        assert g.status == "voided" and not g.try_spend(Decimal("0.001"))
    grant = fake.grants[g.id]
    assert grant["captured"] == Decimal("0.036")  # captured from the grant, not plain usage
    assert fake.balances["v"] == Decimal("0.964")


def test_a_declined_grant_spends_nothing(fake):
    fake.account("empty", "0")
    with client_for(fake) as c:
        g = c.grant("empty", amount="1.00", renew=True)
        assert (g.status, g.decline_code, g.final) == ("declined", "insufficient_funds", True)
        assert not g.try_spend(Decimal("0.01"))
    assert fake.calls["grant"] == 1


def test_a_token_grant_counts_whole_tokens(fake):
    fake.account("tok", "0", tokens=5000)
    with client_for(fake) as c:
        g = c.grant("tok", tokens=3000, model="m")
        assert g.remaining == 3000 and isinstance(g.remaining, int)
        assert g.try_spend(2000)
        with pytest.raises(ValueError, match="whole"):
            g.try_spend(Decimal("1.5"))
        assert not g.try_spend(3001)  # an increment gets the last 2000 tokens: 3000 < 3001
        assert g.final and g.remaining == 3000
        assert g.try_spend(3000) and g.remaining == 0
