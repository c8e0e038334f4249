"""Which versions are in force for whom: removal blockers per reseller, and aware instants only."""

from __future__ import annotations

from datetime import datetime

import pytest

from plans import catalog
from plans.errors import InvalidCatalog
from plans.rate_card_versions import plan_rate_card
from plans.reseller_books import reseller_book_in_force
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


@pytest.mark.parametrize("in_force", [catalog.contract_in_force, reseller_book_in_force])
def test_the_version_in_force_is_asked_at_an_aware_instant_only(models, in_force):
    naive = datetime(2026, 2, 1)
    with pytest.raises(InvalidCatalog, match="at must be a timestamp with a UTC offset"):
        in_force(models, "acc_a", "USD", naive)
    assert in_force(models, "acc_a", "USD", FEB) is None
