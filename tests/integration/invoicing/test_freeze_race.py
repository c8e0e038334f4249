"""A dispute freeze released while a usage batch of the same account is writing its lots.

The batch is between reading and writing its lots: the release waits for the batch (both lock
the account row first), so neither overwrites the other.
"""

from __future__ import annotations

import threading

from sqlalchemy import select

import wallet.gateway as charging
from invoicing.payments.accounts import card_ledger
from wallet.audit import find_violations
from wallet.freezes import freeze_topup_credit, release_freeze
from wallet.models import CreditLot, Topup

from .conftest import USD, at, new_account, topup, usd


def test_a_release_waits_for_a_usage_batch_and_nothing_is_lost(
    shop, usage, session_factory, monkeypatch
):
    acc = new_account(shop, "Disputed")
    topup(shop, acc, "50.00", at(1))  # below the bonus tier: one paid lot
    with session_factory.begin() as s:
        t = s.scalars(select(Topup).where(Topup.account_id == acc.id)).one()
        disputed = card_ledger(s, USD).disputed.id
        freeze = freeze_topup_credit(
            s, t.id, usd("20.00"), key="dispute", forfeit_to_account_id=disputed
        )
        freeze_id, lot_id = freeze.id, t.paid_lot_id
    reached, go, released = threading.Event(), threading.Event(), threading.Event()
    real = charging.write

    def paused(*args, **kwargs):
        reached.set()
        assert go.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(charging, "write", paused)
    results: list[object] = []
    batch = threading.Thread(target=lambda: results.append(usage(acc, at(6))))
    batch.start()
    assert reached.wait(30)  # the batch holds the account row and has read the lots

    def release() -> None:
        with session_factory.begin() as s:
            release_freeze(s, freeze_id)
        released.set()

    releaser = threading.Thread(target=release)
    releaser.start()
    assert not released.wait(1)  # blocked behind the batch's account lock
    go.set()
    batch.join(30)
    releaser.join(30)
    assert results == [["charged"]] and released.is_set()
    with session_factory() as s:
        lot = s.get_one(CreditLot, lot_id)
        assert lot.remaining == usd("49.982").atoms  # 50.00 - 0.018, the 20.00 back
        assert find_violations(s) == []
