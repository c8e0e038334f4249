"""Which versions are in force for whom: removal blockers per reseller, and aware instants only."""

from __future__ import annotations

from plans import catalog
from plans.rate_card_versions import plan_rate_card
from tests.integration.plans.conftest import APR, FEB, JAN, MAR, price


def test_a_model_in_a_resellers_book_in_force_blocks_its_removal_whatever_others_publish(
    models,
):
    catalog.create_rate_card(
        models,
        currency="USD",
        effective_from=JAN,
        prices=[price("m-large", "10", "30"), price("m-small", "1", "2")],
    )
    a = catalog.create_reseller_price_book(
        models,
        reseller_account_id="acc_a",
        currency="USD",
        prices=[price("m-small", "1.50", "3")],
        effective_from=FEB,
    )
    catalog.create_reseller_price_book(  # newer, of another reseller, not pricing m-small
        models,
        reseller_account_id="acc_b",
        currency="USD",
        prices=[price("m-large", "12", "36")],
        effective_from=MAR,
    )
    models.commit()
    plan = plan_rate_card(
        models, currency="USD", effective_from=APR, prices=[], remove_models=["m-small"]
    )
    (removed,) = plan.blocked
    assert removed.model == "m-small"
    assert removed.blockers == (
        f"reseller price book {a.id} prices it (it needs a wholesale price)",
    )

