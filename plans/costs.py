"""Upstream cost cards: what the operator pays each upstream vendor for a model.

Operators buy the same model from several vendors (the provider itself, a cloud, a reseller)
at different costs. A cost card prices the models one ``upstream`` sells, with every dimension
of a rate card (:class:`~plans.prices.ModelPrice`: tiers, context tiers, cache writes per TTL,
audio and image tokens, per-request fees), versioned by ``effective_from`` per (upstream,
currency) and never edited. Like rate cards, a new card changes the models it lists and
inherits the others from the card in force.

Cost cards bill nobody: the margin report (:mod:`invoicing.reports`) rates each usage record at
the cost card of its ``upstream`` in force when it occurred. They may take effect in the past
(a vendor's corrected invoice); the report is recomputed from them.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.base import utcnow
from ledger.units import Unit
from plans._db import (
    check_aware,
    check_id,
    check_models,
    insert_version,
    money_unit,
    new_id,
    refuse_taken,
    version_at,
)
from plans.errors import InvalidCatalog
from plans.models import CostCardRow, CostPriceRow
from plans.price_rows import price_columns, stored_prices
from plans.prices import ModelPrice, RateCard


@dataclass(frozen=True, slots=True)
class CostCard:
    """A version of an upstream's costs in one currency (read-only ``prices``)."""

    id: str
    upstream: str
    currency: Unit
    effective_from: datetime
    prices: Mapping[str, ModelPrice]


def _cards(session: Session, rows: list[CostCardRow]) -> list[CostCard]:
    prices = stored_prices(session, CostPriceRow.card_id, [r.id for r in rows])
    return [
        CostCard(
            id=r.id,
            upstream=r.upstream,
            currency=money_unit(r.currency),
            effective_from=r.effective_from,
            prices=MappingProxyType(prices[r.id]),
        )
        for r in rows
    ]


def create_cost_card(
    session: Session,
    *,
    upstream: str,
    currency: Unit | str,
    effective_from: datetime,
    prices: Iterable[Mapping[str, object]],
    inherit: bool = True,
) -> CostCard:
    """Create a cost card version of an upstream.

    Args:
        session: the caller's session (flushed, not committed).
        upstream: the vendor's id (as usage records name it in ``upstream``).
        currency: the currency the operator pays in.
        effective_from: aware instant from which the card is in force.
        prices: items in the rate-card shape (``docs/pricing.md``).
        inherit: keep the models of the upstream's card in force that ``prices`` does not
            list.

    Raises:
        InvalidCatalog: a bad upstream id, no prices, bad fields; InvalidPrice: a bad price;
        UnknownModel: a model not in the catalog; CatalogConflict: a card of this upstream and
        currency already takes effect at that instant.
    """
    upstream = check_id(upstream, what="upstream")
    unit = money_unit(currency)
    start = check_aware(effective_from, what="effective_from")
    listed = [dict(p) for p in prices]
    if not listed:
        raise InvalidCatalog("a cost card needs prices", field="prices")
    card_id = new_id("cc")
    given = RateCard.from_spec(id=card_id, currency=unit, effective_from=start, prices=listed)
    check_models(session, given.prices, what="prices")
    final = dict(given.prices)
    if inherit:
        for model, price in _in_force(session, upstream, unit, start).items():
            final.setdefault(model, price)
    card = CostCard(card_id, upstream, unit, start, MappingProxyType(final))
    _store(session, card)
    return card


def _in_force(
    session: Session, upstream: str, unit: Unit, at: datetime
) -> Mapping[str, ModelPrice]:
    """The prices of the upstream's card in force at ``at`` (empty: none)."""
    before = version_at(
        session,
        CostCardRow,
        at,
        CostCardRow.upstream == upstream,
        CostCardRow.currency == unit.code,
    )
    return {} if before is None else _cards(session, [before])[0].prices


def _store(session: Session, card: CostCard) -> None:
    """Insert a new cost card version, refused when its instant is taken."""
    unit, start = card.currency, card.effective_from
    message = (
        f"upstream {card.upstream} already has a {unit.code} cost card taking effect at"
        f" {start.isoformat()}; choose another effective_from"
    )
    refuse_taken(
        session,
        select(CostCardRow.id).where(
            CostCardRow.upstream == card.upstream,
            CostCardRow.currency == unit.code,
            CostCardRow.effective_from == start,
        ),
        message,
        key="cost_card_id",
    )
    head = CostCardRow(
        id=card.id,
        upstream=card.upstream,
        currency=unit.code,
        effective_from=start,
        created_at=utcnow(),
    )
    prices = [
        CostPriceRow(card_id=card.id, model=m, **price_columns(p)) for m, p in card.prices.items()
    ]
    insert_version(session, head, prices, message)


def list_cost_cards(
    session: Session, *, upstream: str | None = None, currency: Unit | str | None = None
) -> list[CostCard]:
    """Cost cards, by upstream and ``effective_from``."""
    stmt = select(CostCardRow).order_by(CostCardRow.upstream, CostCardRow.effective_from)
    if upstream is not None:
        stmt = stmt.where(CostCardRow.upstream == upstream)
    if currency is not None:
        stmt = stmt.where(CostCardRow.currency == money_unit(currency).code)
    return _cards(session, list(session.scalars(stmt)))


@dataclass
class CostBook:
    """Every cost card of one currency, by upstream (for rating many records)."""

    cards: dict[str, list[CostCard]]

    @classmethod
    def load(cls, session: Session, currency: Unit | str) -> CostBook:
        """Every cost card of ``currency``."""
        out: dict[str, list[CostCard]] = {}
        for card in list_cost_cards(session, currency=currency):
            out.setdefault(card.upstream, []).append(card)
        return cls(out)

    def price(self, upstream: str, model: str, at: datetime) -> ModelPrice | None:
        """The cost of ``model`` from ``upstream`` at ``at`` (``None``: no card prices it)."""
        cards = self.cards.get(upstream)
        if not cards:
            return None
        i = bisect_right([c.effective_from for c in cards], at)
        return cards[i - 1].prices.get(model) if i else None
