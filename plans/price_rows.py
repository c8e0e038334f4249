"""Model prices to and from their table rows.

Rate cards, reseller books and cost cards store prices in the same columns: the resolved
per-Mtok prices, the batch discount and the tiers as JSON in the shape of
:meth:`~plans.prices.ModelPrice.to_spec`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute, Session

from ledger.base import utcnow
from ledger.units import Unit
from plans._db import clean_decimal
from plans.models import CostPriceRow, RateCardPriceRow, ResellerPriceRow
from plans.prices import PRICE_FIELDS, ModelPrice, RateCard


def price_columns(price: ModelPrice) -> dict[str, object]:
    """The column values of a price row for ``price`` (without the owner and the model)."""
    values: dict[str, object] = {name: getattr(price, name) for name in PRICE_FIELDS}
    values["batch_discount_pct"] = price.batch_discount_pct
    spec = price.to_spec()
    values["request_fees"] = spec.get("request_fees", {})
    values["service_tiers"] = spec.get("service_tiers", {})
    values["context_tiers"] = spec.get("context_tiers", [])
    return values


def price_of(row: RateCardPriceRow | ResellerPriceRow | CostPriceRow) -> ModelPrice:
    """The price a price row stores."""
    spec: dict[str, object] = {name: clean_decimal(getattr(row, name)) for name in PRICE_FIELDS}
    spec["batch_discount_pct"] = clean_decimal(row.batch_discount_pct)
    spec["request_fees"] = row.request_fees or {}
    spec["service_tiers"] = row.service_tiers or {}
    spec["context_tiers"] = row.context_tiers or []
    return ModelPrice.from_stored(spec)


def stored_prices(
    session: Session,
    owner: InstrumentedAttribute[str],
    ids: Iterable[str],
) -> dict[str, dict[str, ModelPrice]]:
    """The stored prices of the cards or books ``ids``, by owner id then model, in one query.

    Args:
        session: the caller's session (read only).
        owner: the price rows' owner column (``RateCardPriceRow.card_id``,
            ``ResellerPriceRow.book_id``, ``CostPriceRow.card_id``).
        ids: the owners' ids (each gets an entry, empty when it prices nothing).
    """
    prices: dict[str, dict[str, ModelPrice]] = {owner_id: {} for owner_id in ids}
    if not prices:
        return prices
    row_type = owner.class_
    for row in session.scalars(
        select(row_type).where(owner.in_(prices)).order_by(owner, row_type.model)
    ):
        prices[getattr(row, owner.key)][row.model] = price_of(row)
    return prices


def parse_prices(
    currency: Unit, items: Iterable[Mapping[str, object]], *, owner: str
) -> dict[str, ModelPrice]:
    """Price items in the ``POST /v1/rate-cards`` shape, defaults applied (may be empty)."""
    listed = [dict(item) for item in items]
    if not listed:
        return {}
    # RateCard.from_spec validates keys, duplicates and every price; the id is a placeholder.
    card = RateCard.from_spec(id=owner, currency=currency, effective_from=utcnow(), prices=listed)
    return dict(card.prices)
