"""``/v1/price-quotes``: which price applies to an account's usage of a model."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, get
from pydantic import BaseModel
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.routes.catalog._common import pct_str
from api.routes.catalog.prices import ModelPriceOut, price_out
from api.schemas import scope_of
from ledger.base import utcnow
from ledger.errors import DomainError, NotFound
from plans import catalog
from plans.pricebook import ResolvedPrice
from wallet.accounts import get_account

# -- price quotes -------------------------------------------------------------------------


class PriceQuoteOut(BaseModel):
    """The price that applies to an account's usage of a model at an instant, and its source.

    ``contract`` | ``reseller_retail`` | ``list``. ``wholesale``: for a sub-account, what its
    reseller pays.
    """

    model: str
    currency: str
    source: str
    source_id: str
    card_id: str | None
    discount_pct: str
    markup_pct: str
    prices: ModelPriceOut
    wholesale: PriceQuoteOut | None


def quote_out(r: ResolvedPrice) -> PriceQuoteOut:
    """Wire form of a resolved price, with its wholesale price (recursively) when it has one."""
    return PriceQuoteOut(
        model=r.model,
        currency=r.currency.code,
        source=r.source.value,
        source_id=r.source_id,
        card_id=r.card_id,
        discount_pct=pct_str(r.discount_pct),
        markup_pct=pct_str(r.markup_pct),
        prices=price_out(r.model, r.price),
        wholesale=None if r.wholesale is None else quote_out(r.wholesale),
    )


class CurrencyMismatch(DomainError):
    """A quote asked in another currency than the account's."""

    code = "currency_mismatch"


class PriceQuotesController(Controller):
    """Which price applies: contract -> reseller retail -> list.

    Admin and finance quote any account (or a hypothetical sub-account of a reseller); a reseller
    quotes itself and its own sub-accounts (existing, or hypothetical under itself); a customer or
    gateway the accounts its key can see. Only admin, finance and resellers see a sub-account's
    wholesale price.
    """

    path = "/v1/price-quotes"
    tags = ["catalog"]
    guards = [requires("finance", "reseller", "customer", "gateway")]

    @get("/", sync_to_thread=True, opt={"problems": (422,)})  # no rate card in force
    def quote(
        self,
        db: Session,
        principal: Principal,
        account_id: str,
        currency: str,
        model: str,
        at: datetime | None = None,
        reseller_account_id: str | None = None,
    ) -> PriceQuoteOut:
        """The resolved price of ``model`` for ``account_id``, as usage would be charged.

        ``at`` defaults to now (RFC 3339 with offset). A sub-account's reseller and an
        account's standing discounts are taken from the account (``reseller_account_id`` prices
        a hypothetical sub-account when ``account_id`` does not exist yet).
        """
        discounts: list[dict[str, Any]] = []
        scope = scope_of(principal)
        try:
            account = get_account(db, account_id)
        except NotFound:
            # a hypothetical account: admin and finance price any, a reseller its own future
            # sub-accounts
            own_future_sub = (
                principal.role == "reseller"
                and reseller_account_id is not None
                and reseller_account_id == principal.account_id
            )
            if scope.kind != "all" and not own_future_sub:
                raise
        else:
            if not scope.allows(account):
                raise NotFound(f"account {account_id} does not exist")
            reseller_account_id = account.parent_id
            discounts = account.discounts
            if account.currency != currency.upper():
                raise CurrencyMismatch(
                    f"account {account.id} is priced in {account.currency}, not {currency}"
                )
        quote = quote_out(
            catalog.resolve_account_price(
                db,
                model=model,
                at=at or utcnow(),
                currency=currency,
                account_id=account_id,
                reseller_account_id=reseller_account_id,
                standing_discounts=discounts,
            )
        )
        if not principal.has_role("finance", "reseller"):
            quote.wholesale = None
        return quote


# -- token packages -----------------------------------------------------------------------
