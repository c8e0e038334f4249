"""``/v1/reseller-price-books``: a reseller's retail prices for its sub-accounts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, Request, get
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.idempotency import idempotent_post
from api.routes.catalog._common import (
    acting_reseller,
    hide_others,
    owner_filter,
    pct_str,
    reseller_of,
)
from api.routes.catalog.prices import ModelPriceIn, ModelPriceOut, price_items, prices_out
from api.schemas import MARKUP_PATTERN, IdempotencyKey, Limit, Page
from plans import catalog


class ResellerPriceBookIn(BaseModel):
    """A reseller's retail prices for its sub-accounts.

    Explicit per-model prices win, else ``markup_pct`` over the reseller's wholesale price, else the
    list price.
    """

    model_config = ConfigDict(extra="forbid")
    reseller_account_id: str = Field(min_length=1, max_length=64)
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    markup_pct: str | None = Field(
        default=None,
        examples=["20"],
        description="decimal string, percent over wholesale",
        json_schema_extra={"pattern": MARKUP_PATTERN},
    )
    prices: list[ModelPriceIn] = Field(default=[], max_length=1000)
    effective_from: AwareDatetime | None = None


class ResellerPriceBookOut(BaseModel):
    """A reseller price book version."""

    id: str
    reseller_account_id: str
    currency: str
    markup_pct: str | None
    prices: list[ModelPriceOut]
    effective_from: datetime
    created_at: datetime


def _book_out(b: catalog.ResellerPriceBook) -> ResellerPriceBookOut:
    return ResellerPriceBookOut(
        id=b.id,
        reseller_account_id=b.reseller_account_id,
        currency=b.currency.code,
        markup_pct=None if b.markup_pct is None else pct_str(b.markup_pct),
        prices=prices_out(b.prices),
        effective_from=b.effective_from,
        created_at=b.created_at,
    )


class ResellerPriceBooksController(Controller):
    """Reseller retail price books (admin, or a reseller for its own sub-accounts)."""

    path = "/v1/reseller-price-books"
    tags = ["catalog"]
    guards = [requires("reseller")]

    @idempotent_post(check=acting_reseller("reseller_account_id"))
    def create_book(
        self,
        request: Request[Any, Any, Any],
        data: ResellerPriceBookIn,
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> ResellerPriceBookOut:
        """Create a reseller price book version; ``effective_from`` defaults to now."""
        reseller = reseller_of(db, principal, data.reseller_account_id)
        assert reseller is not None
        return _book_out(
            catalog.create_reseller_price_book(
                db,
                reseller_account_id=reseller,
                currency=data.currency,
                markup_pct=data.markup_pct,
                prices=price_items(data.prices),
                effective_from=data.effective_from,
            )
        )

    @get("/", sync_to_thread=True)
    def list_books(
        self,
        db: Session,
        principal: Principal,
        reseller_account_id: str | None = None,
        limit: Limit = 20,
        starting_after: str | None = None,
    ) -> Page[ResellerPriceBookOut]:
        """Reseller price books in creation order, optionally of one reseller.

        A reseller key sees its own.
        """
        page = catalog.list_reseller_price_books(
            db,
            reseller_account_id=owner_filter(db, principal, reseller_account_id),
            limit=limit,
            starting_after=starting_after,
        )
        return Page[ResellerPriceBookOut](
            data=[_book_out(b) for b in page.items], has_more=page.has_more
        )

    @get("/{book_id:str}", sync_to_thread=True)
    def get_book(self, book_id: str, db: Session, principal: Principal) -> ResellerPriceBookOut:
        """One reseller price book version."""
        book = catalog.get_reseller_price_book(db, book_id)
        hide_others(principal, book.reseller_account_id, f"reseller price book {book_id}")
        return _book_out(book)
