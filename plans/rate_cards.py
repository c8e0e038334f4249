"""List rate cards in the database: reading the versions.

Creating one is :mod:`plans.rate_card_versions`.

Rate cards are never edited. The card in force for a currency at ``at`` is the one with the
greatest ``effective_from <= at``; two cards of one currency never share an
``effective_from``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ledger.units import Unit
from plans._db import Page, check_aware, found, list_rows, money_unit, version_at
from plans.errors import NoRateInForce
from plans.models import RateCardPriceRow, RateCardRow
from plans.price_rows import stored_prices
from plans.prices import ModelPrice, RateCard, price_for


def cards_of(session: Session, rows: list[RateCardRow]) -> list[RateCard]:
    """The cards of ``rows`` with their prices (one query for all of them), in order."""
    prices = stored_prices(session, RateCardPriceRow.card_id, [row.id for row in rows])
    return [
        RateCard(
            id=row.id,
            currency=money_unit(row.currency),
            effective_from=row.effective_from,
            prices=prices[row.id],
        )
        for row in rows
    ]


def card_row_at(session: Session, unit: Unit, at: datetime) -> RateCardRow | None:
    """The row of the ``unit`` card in force at ``at`` (greatest ``effective_from <= at``)."""
    row: RateCardRow | None = version_at(
        session, RateCardRow, at, RateCardRow.currency == unit.code
    )
    return row


def get_rate_card(session: Session, card_id: str) -> RateCard:
    """A rate card by id.

    Raises:
        NotFound: no such card.
    """
    row = found(session.get(RateCardRow, card_id), f"rate card {card_id}", rate_card_id=card_id)
    return cards_of(session, [row])[0]


def list_rate_cards(
    session: Session,
    *,
    currency: Unit | str | None = None,
    limit: int = 20,
    starting_after: str | None = None,
) -> Page[RateCard]:
    """Rate cards in creation order, optionally of one currency."""
    code = money_unit(currency).code if currency is not None else None
    return list_rows(
        session,
        RateCardRow,
        lambda rows: cards_of(session, rows),
        where=[(RateCardRow.currency, code)],
        limit=limit,
        starting_after=starting_after,
    )


def load_rate_cards(session: Session, currency: Unit | str) -> list[RateCard]:
    """Every rate card version of ``currency``, oldest ``effective_from`` first."""
    unit = money_unit(currency)
    rows = list(
        session.scalars(
            select(RateCardRow)
            .where(RateCardRow.currency == unit.code)
            .order_by(RateCardRow.effective_from)
        )
    )
    return cards_of(session, rows)


def card_in_force_at(session: Session, currency: Unit | str, at: datetime) -> RateCard:
    """The list card of ``currency`` in force at ``at`` (greatest ``effective_from <= at``).

    Raises:
        NoRateInForce: no card has taken effect by ``at``.
    """
    unit = money_unit(currency)
    at = check_aware(at, what="at")
    row = card_row_at(session, unit, at)
    if row is None:
        raise NoRateInForce(
            f"no {unit.code} rate card is in force at {at.isoformat()}",
            currency=unit.code,
            at=at.isoformat(),
        )
    return cards_of(session, [row])[0]


def price_in_force(
    session: Session, currency: Unit | str, model: str, at: datetime
) -> tuple[RateCard, ModelPrice]:
    """The list card in force at ``at`` and its price for ``model``.

    Raises:
        NoRateInForce: no card has taken effect by ``at``.
        UnknownModel: the card in force does not price ``model``.
    """
    card = card_in_force_at(session, currency, at)
    return card, price_for(card, model)


def future_cards(session: Session, unit: Unit, now: datetime) -> list[RateCard]:
    """The card in force now (if any) and every later one."""
    floor = session.scalar(
        select(func.max(RateCardRow.effective_from)).where(
            RateCardRow.currency == unit.code, RateCardRow.effective_from <= now
        )
    )
    stmt = select(RateCardRow).where(RateCardRow.currency == unit.code)
    if floor is not None:
        stmt = stmt.where(RateCardRow.effective_from >= floor)
    return cards_of(session, list(session.scalars(stmt.order_by(RateCardRow.effective_from))))
