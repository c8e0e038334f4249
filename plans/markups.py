"""The wholesale prices a reseller markup or a contract discount can meet.

Read from the database so a new catalog object that would not rate exactly is refused when it
is created (the check itself is :func:`plans.discounts.check_markups`).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ledger.units import Unit
from plans._db import clean_decimal
from plans.models import ResellerPriceBookRow
from plans.pricebook import Contract
from plans.prices import ModelPrice
from plans.rate_cards import future_cards


def contract_prices(
    session: Session, contract: Contract, unit: Unit, now: datetime
) -> list[ModelPrice]:
    """Every price ``contract`` can produce from ``now`` on.

    Its locked card's, or its discount on the list card in force now and on every later one.

    Raises:
        InvalidPrice: a discounted price would not rate exactly.
    """
    cards = [contract.card] if contract.card is not None else future_cards(session, unit, now)
    return [contract.price_on(card, model) for card in cards for model in card.prices]


def markups_from(
    session: Session, reseller_account_id: str, unit: Unit, now: datetime
) -> list[tuple[str, Decimal]]:
    """(book id, markup) of the reseller's books in force now or later that have a markup."""
    floor = session.scalar(
        select(func.max(ResellerPriceBookRow.effective_from)).where(
            ResellerPriceBookRow.reseller_account_id == reseller_account_id,
            ResellerPriceBookRow.currency == unit.code,
            ResellerPriceBookRow.effective_from <= now,
        )
    )
    stmt = select(ResellerPriceBookRow.id, ResellerPriceBookRow.markup_pct).where(
        ResellerPriceBookRow.reseller_account_id == reseller_account_id,
        ResellerPriceBookRow.currency == unit.code,
        ResellerPriceBookRow.markup_pct.is_not(None),
    )
    if floor is not None:
        stmt = stmt.where(ResellerPriceBookRow.effective_from >= floor)
    return [
        (book_id, clean_decimal(pct)) for book_id, pct in session.execute(stmt) if pct is not None
    ]
