"""``/v1/rate-cards``: list rate card versions, their dry runs and LiteLLM imports."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from litestar import Controller, Request, get
from litestar.openapi.datastructures import ResponseSpec
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import requires
from api.idempotency import idempotent_post
from api.pricemaps import bundled_map_path, load_map, report_out
from api.routes.catalog._common import CARD_READERS, PCT_DESC
from api.routes.catalog.prices import (
    ModelPriceIn,
    ModelPriceOut,
    price_items,
    price_out,
    prices_out,
)
from api.schemas import IdempotencyKey, Limit, Page
from ledger.base import utcnow
from plans import catalog
from plans.litellm_import import import_litellm
from plans.prices import RateCard
from wallet.errors import InvalidRequest
from wallet.maintenance import usage_of_models


class RateCardIn(BaseModel):
    """A new rate card version. It is never edited; a later ``effective_from`` supersedes it."""

    model_config = ConfigDict(extra="forbid")
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    effective_from: AwareDatetime
    prices: list[ModelPriceIn] = Field(default_factory=list, max_length=1000)
    inherit: bool = Field(
        default=True,
        description="models of the card in force that prices does not list keep their price"
        " (false: the card prices only what it lists)",
    )
    remove_models: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="models to stop pricing (with inherit)",
    )
    confirm_removals: bool = Field(
        default=False,
        description="go ahead although a removed model has usage in the retention window, an"
        " open contract discount or a reseller price book (otherwise 409"
        " model_removal_unconfirmed)",
    )


class ModelChangeOut(BaseModel):
    """What a card does to one model.

    Added, changed, unchanged, inherited or removed; a removal lists why it is risky (blockers).
    """

    model: str
    change: Literal["added", "changed", "unchanged", "inherited", "removed"]
    before: ModelPriceOut | None
    after: ModelPriceOut | None
    blockers: list[str]


class RateCardPreviewOut(BaseModel):
    """A dry run: the card as it would be created, and its changes.

    ``refused``: it has removals to confirm.
    """

    card: RateCardOut
    replaces: str | None = Field(description="the card in force at effective_from")
    changes: list[ModelChangeOut]
    refused: bool
    problem: str | None = None


class LiteLLMImportIn(BaseModel):
    """Import LiteLLM's price map (``model_prices_and_context_window.json``).

    The ``bundled`` one of the installed litellm package, or ``price_map`` itself. A dry run unless
    ``dry_run: false``; then missing models are created and one new card takes effect at
    ``effective_from``, changing the imported models and inheriting the rest.
    """

    model_config = ConfigDict(extra="forbid")
    effective_from: AwareDatetime
    currency: str = Field(default="USD", min_length=3, max_length=3)
    bundled: bool = False
    price_map: dict[str, Any] | None = Field(default=None, description="the map's JSON")
    markup_pct: str | None = Field(default=None, examples=["20"], description=PCT_DESC)
    providers: list[str] | None = Field(default=None, examples=[["openai", "anthropic"]])
    strict: bool = Field(default=False, description="refuse models whose prices need rounding")
    dry_run: bool = True


class LiteLLMImportOut(BaseModel):
    """What an import did or would do.

    Counts per kind of change, the models created, each imported model's change (inherited ones left
    out), the refused models with their reason, the flagged ones (rounded prices, dimensions not
    imported), and the rounding rule.
    """

    applied: bool
    card_id: str | None
    replaces: str | None
    effective_from: datetime
    markup_pct: str | None
    rounding_rule: str
    counts: dict[str, int]
    new_models: list[str]
    changes: list[dict[str, Any]]
    refused: list[dict[str, str]]
    flagged: list[dict[str, Any]]
    skipped: int


def _usage_check(request: Request[Any, Any, Any], db: Session, currency: str) -> dict[str, Any]:
    days = request.app.state.settings.tokenwallet_usage_retention_days
    code = currency.upper()
    return {
        "usage_of_models": lambda models, since: usage_of_models(db, code, models, since),
        "usage_since": utcnow() - timedelta(days=days),
    }


def _card_args(request: Request[Any, Any, Any], db: Session, data: RateCardIn) -> dict[str, Any]:
    """What planning and creating a card take from its request, with its check of usage.

    Args:
        request: the request (its app's usage retention).
        db: the request's session.
        data: the card.
    """
    return {
        "currency": data.currency,
        "effective_from": data.effective_from,
        "prices": price_items(data.prices),
        "inherit": data.inherit,
        "remove_models": data.remove_models,
        **_usage_check(request, db, data.currency),
    }


def _preview_out(plan: catalog.RateCardPlan, confirm: bool) -> RateCardPreviewOut:
    refused = bool(plan.blocked) and not confirm
    return RateCardPreviewOut(
        card=_card_out(plan.card),
        replaces=plan.predecessor_id,
        changes=[
            ModelChangeOut(
                model=c.model,
                change=c.change,
                before=price_out(c.model, c.before) if c.before is not None else None,
                after=price_out(c.model, c.after) if c.after is not None else None,
                blockers=list(c.blockers),
            )
            for c in plan.changes
        ],
        refused=refused,
        problem=(
            "removals to confirm: " + ", ".join(c.model for c in plan.blocked) if refused else None
        ),
    )


class RateCardOut(BaseModel):
    """A rate card version with its resolved prices."""

    id: str
    currency: str
    effective_from: datetime
    prices: list[ModelPriceOut]


def _card_out(card: RateCard) -> RateCardOut:
    return RateCardOut(
        id=card.id,
        currency=card.currency.code,
        effective_from=card.effective_from,
        prices=prices_out(card.prices),
    )


def _one_map(data: LiteLLMImportIn) -> None:
    """Refuse an import that names no price map or two, or the bundled one when missing."""
    if data.bundled == (data.price_map is not None):
        raise InvalidRequest("send bundled: true or price_map, one of the two")
    if data.bundled:
        bundled_map_path()


class RateCardsController(Controller):
    """List rate cards (admin)."""

    path = "/v1/rate-cards"
    tags = ["catalog"]

    @idempotent_post(guards=[requires()])
    def create_rate_card(
        self,
        request: Request[Any, Any, Any],
        data: RateCardIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> RateCardOut:
        """Create a rate card version.

        Models it does not list keep the price of the card in force (``inherit``). 409 ``conflict``:
        a card of the currency already takes effect at that instant; 409 ``backdated_price_change``:
        usage is already priced at or after ``effective_from``; 409 ``model_removal_unconfirmed``:
        it would stop pricing a model still in use (see ``POST /v1/rate-cards/preview``).
        """
        card = catalog.create_rate_card(
            db, confirm_removals=data.confirm_removals, **_card_args(request, db, data)
        )
        return _card_out(card)

    @idempotent_post(
        "/preview",
        status_code=200,
        guards=[requires()],
        responses={200: ResponseSpec(RateCardPreviewOut)},
    )
    def preview_rate_card(
        self,
        request: Request[Any, Any, Any],
        data: RateCardIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> RateCardPreviewOut:
        """A dry run of ``POST /v1/rate-cards``.

        The card it would create and what it changes per model (added, changed, unchanged,
        inherited, removed with blockers). Writes nothing.
        """
        plan = catalog.plan_rate_card(db, **_card_args(request, db, data))
        return _preview_out(plan, data.confirm_removals)

    @idempotent_post(
        "/import-litellm",
        status_code=200,
        responses={200: ResponseSpec(LiteLLMImportOut)},
        guards=[requires()],
        check=_one_map,
    )
    def import_litellm(
        self,
        request: Request[Any, Any, Any],
        data: LiteLLMImportIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        """Import LiteLLM's price map.

        A dry run by default (nothing written); with ``dry_run: false``, the missing models and one
        new card (see ``docs/pricing.md`` for the mapping and the rounding rule).
        """
        report = import_litellm(
            db,
            data.price_map or load_map(bundled_map_path()),
            effective_from=data.effective_from,
            currency=data.currency,
            markup_pct=data.markup_pct,
            providers=data.providers,
            strict=data.strict,
            apply=not data.dry_run,
            **_usage_check(request, db, data.currency),
        )
        return report_out(report)

    @get("/", sync_to_thread=True, guards=[requires(*CARD_READERS)])
    def list_rate_cards(
        self,
        db: Session,
        currency: str | None = None,
        limit: Limit = 20,
        starting_after: str | None = None,
    ) -> Page[RateCardOut]:
        """Rate cards in creation order, optionally of one ``currency``."""
        page = catalog.list_rate_cards(
            db, currency=currency, limit=limit, starting_after=starting_after
        )
        return Page[RateCardOut](data=[_card_out(c) for c in page.items], has_more=page.has_more)

    @get("/{card_id:str}", sync_to_thread=True, guards=[requires(*CARD_READERS)])
    def get_rate_card(self, card_id: str, db: Session) -> RateCardOut:
        """One rate card version."""
        return _card_out(catalog.get_rate_card(db, card_id))
