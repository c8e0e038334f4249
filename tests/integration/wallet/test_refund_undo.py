"""Undoing a refund that failed gives back exactly what it took, bonus reclaimed included."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.amounts import Amount
from ledger.units import currency
from plans import catalog
from tests.integration.wallet.conftest import funded, usage
from wallet.balance import balance_of
from wallet.charging import charge_batch
from wallet.models import Topup
from wallet.refunds import reverse_topup, undo_refund

USD = currency("USD")


def usd(text: str) -> Amount:
    return Amount.parse(text, USD)


def test_an_undone_refund_that_withheld_spent_bonus_leaves_it_to_be_reclaimed_again(
    priced: Session,
):
    # 100.00 by bank transfer with 3.00 of bonus, all of it spent (200,000 output tokens at 15)
    catalog.create_topup_bonus_rule(
        priced, currency="USD", tiers=[{"min_amount": "1.00", "bonus_amount": "3.00"}]
    )
    account = funded(priced, "100.00")
    topup_id = priced.scalars(select(Topup.id).where(Topup.account_id == account.id)).one()
    charged = charge_batch(priced, [usage("r1", account, output_tokens=200_000)])
    assert [r.status for r in charged] == ["charged"]
    priced.commit()
    assert balance_of(priced, account).bonus == usd("0.00")

    # the refund withholds the spent bonus from the payout; its failure undoes all of it
    first = reverse_topup(priced, topup_id, usd("100.00"))
    assert (first.refunded, first.bonus_clawed_back, first.withheld) == (
        usd("100.00"),
        usd("3.00"),
        usd("3.00"),
    )
    undo_refund(priced, topup_id, first.entry_id, idempotency_key="undo-1")
    priced.commit()
    topup = priced.get_one(Topup, topup_id)
    assert (topup.refunded, topup.bonus_clawed_back) == (0, 0)
    assert balance_of(priced, account).paid == usd("100.00")

    # so the refund made again reclaims the spent bonus again
    again = reverse_topup(priced, topup_id, usd("100.00"))
    assert (again.bonus_clawed_back, again.withheld) == (usd("3.00"), usd("3.00"))
