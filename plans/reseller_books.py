"""Reseller retail price books in the database.

They are versioned by ``effective_from`` per (reseller, currency), like rate cards.

A book prices a reseller's sub-accounts: an explicit price per model, else a markup over the
reseller's wholesale price (its own contract, else list). A book takes effect strictly after
the rating watermark (:mod:`plans.watermark`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.base import utcnow
from ledger.units import Unit
from plans._db import (
    Page,
    check_aware,
    check_models,
    clean_decimal,
    found,
    insert_version,
    list_rows,
    money_unit,
    new_id,
    refuse_taken,
    version_at,
)
from plans.contracts import check_account_id, open_contracts, pure_contract
from plans.discounts import check_markups
from plans.markups import contract_prices
from plans.models import ResellerPriceBookRow, ResellerPriceRow
from plans.price_fields import MAX_MARKUP_PCT, parse_pct
from plans.price_rows import parse_prices, price_columns, stored_prices
from plans.pricebook import Contract, ResellerRetail
from plans.prices import ModelPrice
from plans.rate_cards import future_cards, get_rate_card
from plans.watermark import refuse_backdated


@dataclass(frozen=True, slots=True)
class ResellerPriceBook:
    """A stored reseller retail price book version.

    Attributes:
        id: the book's id (``source_id`` of usage it prices).
        reseller_account_id: the reseller whose sub-accounts it prices.
        currency: the currency of its prices.
        markup_pct: percent over the reseller's wholesale price, or ``None``.
        prices: model -> explicit retail price (defaults applied), read-only.
        effective_from: first instant in force (inclusive).
        created_at: when it was created.
    """

    id: str
    reseller_account_id: str
    currency: Unit
    markup_pct: Decimal | None
    prices: Mapping[str, ModelPrice]
    effective_from: datetime
    created_at: datetime

    def __hash__(self) -> int:
        """Hash by id (a version's id names it; its prices mapping is not hashable)."""
        return hash(("reseller_price_book", self.id))

    def to_retail(self, wholesale_contract: Contract | None = None) -> ResellerRetail:
        """The pure price book for :func:`plans.pricebook.resolve_price`."""
        return ResellerRetail(
            id=self.id,
            currency=self.currency,
            markup_pct=self.markup_pct,
            overrides=self.prices,
            wholesale_contract=wholesale_contract,
        )


def books_of(session: Session, rows: list[ResellerPriceBookRow]) -> list[ResellerPriceBook]:
    """The books of ``rows`` with their explicit prices (one query), in order."""
    prices = stored_prices(session, ResellerPriceRow.book_id, [row.id for row in rows])
    return [
        ResellerPriceBook(
            id=row.id,
            reseller_account_id=row.reseller_account_id,
            currency=money_unit(row.currency),
            markup_pct=None if row.markup_pct is None else clean_decimal(row.markup_pct),
            prices=MappingProxyType(prices[row.id]),
            effective_from=row.effective_from,
            created_at=row.created_at,
        )
        for row in rows
    ]


def create_reseller_price_book(
    session: Session,
    *,
    reseller_account_id: str,
    currency: Unit | str,
    markup_pct: object = None,
    prices: Iterable[Mapping[str, object]] = (),
    effective_from: datetime | None = None,
) -> ResellerPriceBook:
    """Create a reseller's retail price book version for its sub-accounts.

    For a model, an explicit price wins; otherwise ``markup_pct`` is added to the reseller's
    wholesale price (its own contract, else list); with neither, the sub-account pays list.

    Args:
        session: the caller's session (flushed, not committed).
        reseller_account_id: the reseller (opaque here; the wallet owns accounts).
        currency: the currency of the book (the reseller's).
        markup_pct: percent over wholesale (>= 0, <= 2 decimals), or ``None``.
        prices: explicit retail prices, same shape as rate-card prices.
        effective_from: first instant in force; defaults to now.

    Raises:
        InvalidCatalog: neither a markup nor any price, a model priced twice, bad fields.
        InvalidPrice: a bad price or markup, or a markup over a wholesale price known now
            (current and future list cards, the reseller's contracts) that would not rate
            exactly.
        UnknownModel: a priced model that is not in the catalog.
        CatalogConflict: a book of this reseller and currency already starts at that instant.
        BackdatedPriceChange: ``effective_from`` is not after the usage already priced.
    """
    reseller = check_account_id(reseller_account_id, "reseller_account_id")
    unit = money_unit(currency)
    now = utcnow()
    start = now if effective_from is None else check_aware(effective_from, what="effective_from")
    book_id = new_id("rb")
    markup = (
        None
        if markup_pct is None
        else parse_pct(markup_pct, what="markup_pct", maximum=MAX_MARKUP_PCT)
    )
    overrides = parse_prices(unit, prices, owner=book_id)
    book = ResellerPriceBook(
        id=book_id,
        reseller_account_id=reseller,
        currency=unit,
        markup_pct=markup,
        prices=MappingProxyType(overrides),
        effective_from=start,
        created_at=now,
    )
    book.to_retail()  # validates "neither markup nor override" and the markup itself
    check_models(session, overrides, what="prices")
    if markup is not None:
        check_markups(_wholesale_prices(session, reseller, unit, now), [(book_id, markup)])
    _store(session, book)
    return book


def _wholesale_prices(
    session: Session, reseller_account_id: str, unit: Unit, now: datetime
) -> list[ModelPrice]:
    """Every wholesale price a reseller's markup can meet from ``now`` on.

    The list cards in force now and later, and the prices of the reseller's open contracts.
    """
    wholesale = [
        price for card in future_cards(session, unit, now) for price in card.prices.values()
    ]
    for spec in open_contracts(session, reseller_account_id, unit, now):
        card = get_rate_card(session, spec.rate_card_id) if spec.rate_card_id else None
        wholesale += contract_prices(session, pure_contract(spec, card), unit, now)
    return wholesale


def _store(session: Session, book: ResellerPriceBook) -> None:
    """Insert a new book version, refused when its instant is taken or already priced."""
    unit, reseller, start = book.currency, book.reseller_account_id, book.effective_from
    message = (
        f"reseller {reseller} already has a {unit.code} price book taking effect "
        f"at {start.isoformat()}; choose another effective_from for the new version"
    )
    refuse_taken(
        session,
        select(ResellerPriceBookRow.id).where(
            ResellerPriceBookRow.reseller_account_id == reseller,
            ResellerPriceBookRow.currency == unit.code,
            ResellerPriceBookRow.effective_from == start,
        ),
        message,
        key="reseller_price_book_id",
    )
    refuse_backdated(session, unit, start, f"price book of reseller {reseller}")
    insert_version(
        session,
        ResellerPriceBookRow(
            id=book.id,
            reseller_account_id=reseller,
            currency=unit.code,
            markup_pct=book.markup_pct,
            effective_from=start,
            created_at=book.created_at,
        ),
        [
            ResellerPriceRow(book_id=book.id, model=model, **price_columns(price))
            for model, price in book.prices.items()
        ],
        message,
    )


def get_reseller_price_book(session: Session, book_id: str) -> ResellerPriceBook:
    """A reseller price book by id.

    Raises:
        NotFound: no such book.
    """
    row = found(
        session.get(ResellerPriceBookRow, book_id),
        f"reseller price book {book_id}",
        book_id=book_id,
    )
    return books_of(session, [row])[0]


def list_reseller_price_books(
    session: Session,
    *,
    reseller_account_id: str | None = None,
    limit: int = 20,
    starting_after: str | None = None,
) -> Page[ResellerPriceBook]:
    """Reseller price books in creation order, optionally of one reseller."""
    return list_rows(
        session,
        ResellerPriceBookRow,
        lambda rows: books_of(session, rows),
        where=[(ResellerPriceBookRow.reseller_account_id, reseller_account_id)],
        limit=limit,
        starting_after=starting_after,
    )


def reseller_book_in_force(
    session: Session, reseller_account_id: str, currency: Unit | str, at: datetime
) -> ResellerPriceBook | None:
    """The reseller's price book in force at ``at`` (greatest ``effective_from <= at``).

    Raises:
        InvalidCatalog: a naive ``at``.
    """
    unit = money_unit(currency)
    at = check_aware(at, what="at")
    row = version_at(
        session,
        ResellerPriceBookRow,
        at,
        ResellerPriceBookRow.reseller_account_id == reseller_account_id,
        ResellerPriceBookRow.currency == unit.code,
    )
    return None if row is None else books_of(session, [row])[0]
