"""``/v1/cost-cards`` and ``/v1/rating-watermarks``.

What upstream usage costs, and how far it is rated.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, Request, get
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import requires
from api.idempotency import idempotent_post
from api.routes.catalog.prices import ModelPriceIn, ModelPriceOut, price_items, prices_out
from api.schemas import IdempotencyKey
from plans import catalog
from plans.costs import CostCard, create_cost_card, list_cost_cards


class CostCardIn(BaseModel):
    """A new cost card version of an upstream vendor.

    What the operator pays it per model, in the rate-card shape (every price dimension); models it
    does not list keep the upstream's card in force (``inherit``).
    """

    model_config = ConfigDict(extra="forbid")
    upstream: str = Field(min_length=1, max_length=64, examples=["azure-eu"])
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    effective_from: AwareDatetime
    prices: list[ModelPriceIn] = Field(min_length=1, max_length=5000)
    inherit: bool = True


class CostCardOut(BaseModel):
    """An upstream's cost card version with its resolved prices."""

    id: str
    upstream: str
    currency: str
    effective_from: datetime
    prices: list[ModelPriceOut]


class CostCardList(BaseModel):
    """Cost cards by upstream and effective_from."""

    data: list[CostCardOut]


def _cost_card_out(card: CostCard) -> CostCardOut:
    return CostCardOut(
        id=card.id,
        upstream=card.upstream,
        currency=card.currency.code,
        effective_from=card.effective_from,
        prices=prices_out(card.prices),
    )


class CostCardsController(Controller):
    """Upstream cost cards (admin): what each vendor costs the operator, for the margin report."""

    path = "/v1/cost-cards"
    tags = ["catalog"]
    guards = [requires()]

    @idempotent_post()
    def create_cost_card(
        self,
        request: Request[Any, Any, Any],
        data: CostCardIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> CostCardOut:
        """Create a cost card version of an upstream.

        409 ``conflict`` if one takes effect at that instant already. Cost cards bill nobody and may
        take effect in the past.
        """
        return _cost_card_out(
            create_cost_card(
                db,
                upstream=data.upstream,
                currency=data.currency,
                effective_from=data.effective_from,
                prices=price_items(data.prices),
                inherit=data.inherit,
            )
        )

    @get("/", sync_to_thread=True)
    def list_cost_cards(
        self, db: Session, upstream: str | None = None, currency: str | None = None
    ) -> CostCardList:
        """Cost cards, optionally of one upstream or currency."""
        cards = list_cost_cards(db, upstream=upstream, currency=currency)
        return CostCardList(data=[_cost_card_out(c) for c in cards])


class RatingWatermarkOut(BaseModel):
    """The latest usage instant already priced in a currency.

    New rate cards, contracts and reseller price books must take effect after it. Null: nothing
    priced yet.
    """

    currency: str
    priced_through_at: datetime | None


class RatingWatermarksController(Controller):
    """Rating watermarks (admin, read only)."""

    path = "/v1/rating-watermarks"
    tags = ["catalog"]
    guards = [requires()]

    @get("/{currency:str}", sync_to_thread=True)
    def get_watermark(self, currency: str, db: Session) -> RatingWatermarkOut:
        """The currency's watermark."""
        return RatingWatermarkOut(
            currency=currency.upper(), priced_through_at=catalog.priced_through(db, currency)
        )


# -- contracts ----------------------------------------------------------------------------
