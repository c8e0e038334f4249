from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from ledger.accounts import get_balance
from ledger.base import utcnow
from ledger.errors import HoldExceeded, HoldNotPending, InsufficientFunds
from ledger.holds import create_hold, expire_holds, get_hold, post_hold, void_hold
from ledger.journal import transfer

from .conftest import top_up, usd


def _hold(session, chart, value, minutes=10):
    return create_hold(
        session,
        transfer(chart.prepaid, chart.revenue, usd(value)),
        expires_at=utcnow() + timedelta(minutes=minutes),
    )


def test_pending_hold_reduces_available_then_partial_post(session, chart):
    top_up(session, chart, "10")
    h = _hold(session, chart, "4")
    session.commit()
    b = get_balance(session, chart.prepaid.id)
    assert (b.posted, b.pending_out, b.available) == (usd("10"), usd("4"), usd("6"))
    # the hold counts: another 7 cannot be spent
    with pytest.raises(InsufficientFunds):
        _hold(session, chart, "7")
    session.rollback()
    post_hold(session, h.id, transfer(chart.prepaid, chart.revenue, usd("2.5")))
    session.commit()
    b = get_balance(session, chart.prepaid.id)
    assert (b.posted, b.pending_out, b.available) == (usd("7.5"), usd("0"), usd("7.5"))
    assert get_balance(session, chart.revenue.id).posted == usd("2.5")
    assert get_hold(session, h.id).status == "posted"
    with pytest.raises(HoldNotPending):
        void_hold(session, h.id)


def test_void_releases_everything(session, chart):
    top_up(session, chart, "10")
    h = _hold(session, chart, "10")
    session.commit()
    assert get_balance(session, chart.prepaid.id).available == usd("0")
    void_hold(session, h.id)
    session.commit()
    b = get_balance(session, chart.prepaid.id)
    assert (b.posted, b.available) == (usd("10"), usd("10"))
    assert get_hold(session, h.id).status == "voided"


def test_post_more_than_held_is_refused(session, chart):
    top_up(session, chart, "10")
    h = _hold(session, chart, "1")
    session.commit()
    with pytest.raises(HoldExceeded):
        post_hold(session, h.id, transfer(chart.prepaid, chart.revenue, usd("1.01")))
    session.rollback()
    # explicitly allowed (e.g. covered by a credit limit): still subject to overdraft checks
    post_hold(session, h.id, transfer(chart.prepaid, chart.revenue, usd("1.01")), allow_exceed=True)
    session.commit()
    assert get_balance(session, chart.prepaid.id).available == usd("8.99")


def test_expiry_releases_once_and_blocks_late_post(session, chart):
    top_up(session, chart, "10")
    h = _hold(session, chart, "3", minutes=1)
    session.commit()
    later = utcnow() + timedelta(minutes=2)
    with pytest.raises(HoldNotPending, match="expired"):
        post_hold(session, h.id, now=later)
    session.rollback()
    assert expire_holds(session, now=later) == [h.id]
    session.commit()
    assert expire_holds(session, now=later) == []
    assert get_balance(session, chart.prepaid.id).available == usd("10")
    assert get_hold(session, h.id).status == "expired"


def test_idempotent_resolution(session, chart):
    top_up(session, chart, "10")
    h = _hold(session, chart, "3")
    session.commit()
    a = post_hold(session, h.id, idempotency_key="settle-1")
    session.commit()
    b = post_hold(session, h.id, idempotency_key="settle-1")
    assert a.id == b.id and b.replayed


def test_post_void_and_expiry_race_on_one_hold(session_factory, chart):
    with session_factory.begin() as s:
        top_up(s, chart, "10")
    for _ in range(5):
        with session_factory.begin() as s:
            h = _hold(s, chart, "2", minutes=1)
        outcomes: list[str] = []
        barrier = threading.Barrier(3)
        later = utcnow() + timedelta(minutes=5)

        def act(kind: str, hold_id: int = h.id) -> None:
            barrier.wait()
            try:
                with session_factory.begin() as s:
                    if kind == "post":
                        post_hold(s, hold_id, now=utcnow())
                    elif kind == "void":
                        void_hold(s, hold_id)
                    else:
                        if not expire_holds(s, now=later):
                            return
                outcomes.append(kind)
            except HoldNotPending:
                pass

        threads = [threading.Thread(target=act, args=(k,)) for k in ("post", "void", "expire")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(outcomes) == 1, outcomes
    with session_factory() as s:
        b = get_balance(s, chart.prepaid.id)
        assert b.pending_out == usd("0")
