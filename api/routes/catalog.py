"""The catalog (admin writes it): models, rate cards, contracts, reseller price books, token
packages, coding plans, top-up bonus rules, failed-request policies, and price quotes.

Customers, resellers and gateways read the models, packages and plans they buy from; finance
and resellers the list rate cards; every key quotes the prices of the accounts it can see.

Every catalog object is immutable once created; a new version supersedes it (see
``plans/README.md``). Money and prices are decimal strings in and out, never JSON numbers.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.idempotency import run_idempotent
from api.openapi import only, returns
from api.pricemaps import bundled_map_path, load_map, report_out
from api.schemas import (
    MARKUP_PATTERN,
    MONEY_PATTERN,
    PCT_PATTERN,
    PRICE_PATTERN,
    IdempotencyKey,
    Limit,
    scope_of,
)
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.errors import DomainError, NotFound
from plans import catalog
from plans._db import ID_RE
from plans.costs import CostCard, create_cost_card, list_cost_cards
from plans.litellm_import import import_litellm
from plans.pricebook import ResolvedPrice
from plans.prices import PRICE_FIELDS, ModelPrice, RateCard
from wallet.accounts import get_account
from wallet.errors import InvalidRequest
from wallet.maintenance import usage_of_models

Treatment = Literal["billed", "not_billed", "output_not_billed"]
#: who may read the catalog they buy from: models, token packages, coding plans
READERS = ("finance", "reseller", "customer", "gateway")
#: list rate cards are the wholesale basis of resellers: not shown to customers, who read
#: their own effective prices (``GET /v1/accounts/{id}/prices``, ``/v1/price-quotes``)
CARD_READERS = ("finance", "reseller")
_PCT = "decimal string, percent (0..100, at most 2 decimals)"


#: Operator-chosen catalog ids, as ``plans._db.check_id`` accepts them.
_CATALOG_ID: dict[str, Any] = {"pattern": ID_RE.pattern}


#: Lists of model ids (``plans._db`` refuses empty ones).
_MODEL_IDS: dict[str, Any] = {"items": {"type": "string", "minLength": 1}}


def _price_field(*, optional: bool = False) -> Any:
    # Decimal strings are checked by plans.prices.parse_price, whose messages name the field
    # and the rule (negative, too many decimals...); JSON numbers are refused here.
    desc = "decimal string per million tokens, at most 6 decimals"
    doc: dict[str, Any] = {"pattern": PRICE_PATTERN}
    if optional:
        return Field(default=None, examples=["0.30"], description=desc, json_schema_extra=doc)
    return Field(examples=["3.00"], description=desc, json_schema_extra=doc)


def price_str(value: Decimal) -> str:
    """A price as a plain decimal string with at least two decimals (``3`` -> ``"3.00"``)."""
    text = format(value, "f")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def pct_str(value: Decimal) -> str:
    """A percentage as a plain decimal string (``50``, ``12.5``)."""
    return format(value, "f")


def _reseller_of(db: Session, principal: Principal, account_id: str | None) -> str | None:
    """The reseller account a bonus rule or retail price book belongs to.

    A reseller key acts only for its own account (another id looks unknown: 404); an admin
    names any reseller, checked to exist and to be a reseller.

    Raises:
        NotFound: the account does not exist or is not visible to the key.
        InvalidRequest: the account is not a reseller.
    """
    if principal.role == "reseller":
        if account_id not in (None, principal.account_id):
            raise NotFound(f"account {account_id} does not exist")
        account_id = principal.account_id
    if account_id is None:
        return None
    account = get_account(db, account_id, scope=scope_of(principal))
    if account.kind != "reseller" or account.parent_id is not None:
        raise InvalidRequest(
            f"account {account_id} is not a reseller; only resellers have their own bonus rules"
            " and retail prices for sub-accounts"
        )
    return account.id


def _post(
    request: Request[Any, Any, Any], db: Session, key: str | None, body: BaseModel, produce: Any
) -> Response[bytes]:
    return run_idempotent(db, request, key, body=body, status_code=201, produce=produce)


# -- shared shapes ------------------------------------------------------------------------


class _TokenPricesIn(BaseModel):
    """Per-Mtok token prices; omitted ones take their defaults from this object's own input
    and output prices."""

    model_config = ConfigDict(extra="forbid")
    input_per_mtok: str = _price_field()
    output_per_mtok: str = _price_field()
    cache_read_per_mtok: str | None = _price_field(optional=True)
    cache_write_5m_per_mtok: str | None = _price_field(optional=True)
    cache_write_30m_per_mtok: str | None = _price_field(optional=True)
    cache_write_1h_per_mtok: str | None = _price_field(optional=True)
    cache_write_12h_per_mtok: str | None = _price_field(optional=True)
    reasoning_per_mtok: str | None = _price_field(optional=True)
    input_audio_per_mtok: str | None = _price_field(optional=True)
    input_image_per_mtok: str | None = _price_field(optional=True)
    output_audio_per_mtok: str | None = _price_field(optional=True)
    output_image_per_mtok: str | None = _price_field(optional=True)


class ContextTierIn(_TokenPricesIn):
    """Prices of a whole request whose prompt (every input token, cached and written ones
    included) is larger than ``above_input_tokens``."""

    above_input_tokens: int = Field(ge=1, le=10**9, examples=[200_000])


class ServiceTierIn(BaseModel):
    """A service tier: ``multiplier`` of the standard prices (of the context tier the request
    falls in), or prices of its own (``input_per_mtok``, ``output_per_mtok``, ...; optional
    ``context_tiers``). Fees are never multiplied."""

    model_config = ConfigDict(extra="forbid")
    multiplier: str | None = Field(
        default=None, examples=["0.5"], description="decimal string > 0, at most 4 decimals"
    )
    input_per_mtok: str | None = _price_field(optional=True)
    output_per_mtok: str | None = _price_field(optional=True)
    cache_read_per_mtok: str | None = _price_field(optional=True)
    cache_write_5m_per_mtok: str | None = _price_field(optional=True)
    cache_write_30m_per_mtok: str | None = _price_field(optional=True)
    cache_write_1h_per_mtok: str | None = _price_field(optional=True)
    cache_write_12h_per_mtok: str | None = _price_field(optional=True)
    reasoning_per_mtok: str | None = _price_field(optional=True)
    input_audio_per_mtok: str | None = _price_field(optional=True)
    input_image_per_mtok: str | None = _price_field(optional=True)
    output_audio_per_mtok: str | None = _price_field(optional=True)
    output_image_per_mtok: str | None = _price_field(optional=True)
    context_tiers: list[ContextTierIn] | None = Field(default=None, max_length=10)


FeeKind = Literal["web_search", "web_fetch", "code_execution", "file_search", "tool_call"]
TierName = Literal["flex", "priority", "batch", "scale", "fast", "ultrafast"]


class ModelPriceIn(_TokenPricesIn):
    """One model's prices per million tokens. Omitted: cache read 0.1x input, 5-minute cache
    write 1.25x input (30-minute: the same), 1-hour cache write 2x input (12-hour: the same),
    reasoning = output, audio and image input = input, audio and image output = output, batch
    discount 50 %. ``request_fees``: money per request (web search, ...), counted by records'
    ``tool_calls``. ``service_tiers``: flex, priority, batch, scale, fast (a record of a tier
    the card does not price is refused, except batch, which takes the batch discount).
    ``context_tiers``: prices for larger prompts."""

    model: str = Field(min_length=1, max_length=128)
    batch_discount_pct: str | None = Field(
        default=None, examples=["50"], description=_PCT, json_schema_extra={"pattern": PCT_PATTERN}
    )
    request_fees: dict[FeeKind, str] | None = Field(
        default=None,
        examples=[{"web_search": "0.01"}],
        description="decimal strings, money per request, at most 6 decimals",
    )
    service_tiers: dict[TierName, ServiceTierIn] | None = Field(
        default=None,
        examples=[{"flex": {"multiplier": "0.5"}, "priority": {"multiplier": "1.8"}}],
    )
    context_tiers: list[ContextTierIn] | None = Field(default=None, max_length=10)


class ContextTierOut(BaseModel):
    """A context tier with its resolved prices."""

    above_input_tokens: int
    input_per_mtok: str
    output_per_mtok: str
    cache_read_per_mtok: str
    cache_write_5m_per_mtok: str
    cache_write_30m_per_mtok: str
    cache_write_1h_per_mtok: str
    cache_write_12h_per_mtok: str
    reasoning_per_mtok: str
    input_audio_per_mtok: str
    input_image_per_mtok: str
    output_audio_per_mtok: str
    output_image_per_mtok: str


class ServiceTierOut(BaseModel):
    """A service tier: a multiplier, or its own resolved prices."""

    multiplier: str | None = None
    input_per_mtok: str | None = None
    output_per_mtok: str | None = None
    cache_read_per_mtok: str | None = None
    cache_write_5m_per_mtok: str | None = None
    cache_write_30m_per_mtok: str | None = None
    cache_write_1h_per_mtok: str | None = None
    cache_write_12h_per_mtok: str | None = None
    reasoning_per_mtok: str | None = None
    input_audio_per_mtok: str | None = None
    input_image_per_mtok: str | None = None
    output_audio_per_mtok: str | None = None
    output_image_per_mtok: str | None = None
    context_tiers: list[ContextTierOut] | None = None


class ModelPriceOut(BaseModel):
    """One model's resolved prices per million tokens (defaults applied when it was created),
    per-request fees, service tiers and context tiers."""

    model: str
    input_per_mtok: str
    output_per_mtok: str
    cache_read_per_mtok: str
    cache_write_5m_per_mtok: str
    cache_write_30m_per_mtok: str
    cache_write_1h_per_mtok: str
    cache_write_12h_per_mtok: str
    reasoning_per_mtok: str
    input_audio_per_mtok: str
    input_image_per_mtok: str
    output_audio_per_mtok: str
    output_image_per_mtok: str
    batch_discount_pct: str
    request_fees: dict[str, str] = Field(default_factory=dict)
    service_tiers: dict[str, ServiceTierOut] = Field(default_factory=dict)
    context_tiers: list[ContextTierOut] = Field(default_factory=list)


def _token_prices(price: ModelPrice) -> dict[str, str]:
    return {name: price_str(getattr(price, name)) for name in PRICE_FIELDS}


def _context_out(price: ModelPrice) -> list[ContextTierOut]:
    return [
        ContextTierOut(above_input_tokens=c.above_input_tokens, **_token_prices(c.price))
        for c in price.context_tiers
    ]


def price_out(model: str, price: ModelPrice) -> ModelPriceOut:
    """Wire form of one model's prices."""
    tiers: dict[str, ServiceTierOut] = {}
    for t in price.service_tiers:
        if t.multiplier is not None:
            tiers[t.name] = ServiceTierOut(multiplier=pct_str(t.multiplier))
        else:
            assert t.price is not None
            tiers[t.name] = ServiceTierOut(
                **_token_prices(t.price), context_tiers=_context_out(t.price) or None
            )
    return ModelPriceOut(
        model=model,
        batch_discount_pct=pct_str(price.batch_discount_pct),
        request_fees={k: price_str(v) for k, v in price.request_fees},
        service_tiers=tiers,
        context_tiers=_context_out(price),
        **_token_prices(price),
    )


def _prices_out(prices: Any) -> list[ModelPriceOut]:
    return [price_out(model, prices[model]) for model in sorted(prices)]


def _price_items(prices: list[ModelPriceIn]) -> list[dict[str, object]]:
    return [p.model_dump(exclude_none=True) for p in prices]


def _money(amount: Amount) -> str:
    return amount.format()


# -- models -------------------------------------------------------------------------------


class CatalogModelIn(BaseModel):
    """A model that rate cards can price."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(
        min_length=1, max_length=128, examples=["claude-sonnet-4"], json_schema_extra=_CATALOG_ID
    )
    provider: str = Field(min_length=1, max_length=100, examples=["anthropic"])
    display_name: str = Field(min_length=1, max_length=200, examples=["Claude Sonnet 4"])


class CatalogModelOut(BaseModel):
    """A model in the catalog."""

    id: str
    provider: str
    display_name: str
    created_at: datetime


class CatalogModelList(BaseModel):
    """A page of models."""

    data: list[CatalogModelOut]
    has_more: bool


def _model_out(m: catalog.ModelInfo) -> CatalogModelOut:
    return CatalogModelOut(
        id=m.id, provider=m.provider, display_name=m.display_name, created_at=m.created_at
    )


class ModelsController(Controller):
    """Models (admin). Ids may contain ``/`` (``anthropic/claude-sonnet-4``)."""

    path = "/v1/models"
    tags = ["catalog"]

    @post(
        "/",
        sync_to_thread=True,
        status_code=201,
        responses=returns(CatalogModelOut, 201),
        guards=[requires()],
    )
    def create_model(
        self,
        request: Request[Any, Any, Any],
        data: CatalogModelIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Add a model; 409 ``conflict`` if the id exists."""

        def produce() -> CatalogModelOut:
            return _model_out(
                catalog.create_model(
                    db, id=data.id, provider=data.provider, display_name=data.display_name
                )
            )

        return _post(request, db, idempotency_key, data, produce)

    @get("/", sync_to_thread=True, guards=[requires(*READERS)])
    def list_models(
        self, db: Session, limit: Limit = 20, starting_after: str | None = None
    ) -> CatalogModelList:
        """Models by id."""
        page = catalog.list_models(db, limit=limit, starting_after=starting_after)
        return CatalogModelList(data=[_model_out(m) for m in page.items], has_more=page.has_more)

    @get("/{model_id:path}", sync_to_thread=True, guards=[requires(*READERS)])
    def get_model(self, model_id: str, db: Session) -> CatalogModelOut:
        """One model."""
        return _model_out(catalog.get_model(db, model_id.lstrip("/")))


# -- rate cards ---------------------------------------------------------------------------


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
    """What a card does to one model: added, changed, unchanged, inherited or removed; a
    removal lists why it is risky (blockers)."""

    model: str
    change: Literal["added", "changed", "unchanged", "inherited", "removed"]
    before: ModelPriceOut | None
    after: ModelPriceOut | None
    blockers: list[str]


class RateCardPreviewOut(BaseModel):
    """A dry run: the card as it would be created, and its changes. ``refused``: it has
    removals to confirm."""

    card: RateCardOut
    replaces: str | None = Field(description="the card in force at effective_from")
    changes: list[ModelChangeOut]
    refused: bool
    problem: str | None = None


class LiteLLMImportIn(BaseModel):
    """Import LiteLLM's price map (``model_prices_and_context_window.json``): the ``bundled``
    one of the installed litellm package, or ``price_map`` itself. A dry run unless
    ``dry_run: false``; then missing models are created and one new card takes effect at
    ``effective_from``, changing the imported models and inheriting the rest."""

    model_config = ConfigDict(extra="forbid")
    effective_from: AwareDatetime
    currency: str = Field(default="USD", min_length=3, max_length=3)
    bundled: bool = False
    price_map: dict[str, Any] | None = Field(default=None, description="the map's JSON")
    markup_pct: str | None = Field(default=None, examples=["20"], description=_PCT)
    providers: list[str] | None = Field(default=None, examples=[["openai", "anthropic"]])
    strict: bool = Field(default=False, description="refuse models whose prices need rounding")
    dry_run: bool = True


class LiteLLMImportOut(BaseModel):
    """What an import did or would do: counts per kind of change, the models created, each
    imported model's change (inherited ones left out), the refused models with their reason,
    the flagged ones (rounded prices, dimensions not imported), and the rounding rule."""

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


class RateCardList(BaseModel):
    """A page of rate cards."""

    data: list[RateCardOut]
    has_more: bool


def _card_out(card: RateCard) -> RateCardOut:
    return RateCardOut(
        id=card.id,
        currency=card.currency.code,
        effective_from=card.effective_from,
        prices=_prices_out(card.prices),
    )


class RateCardsController(Controller):
    """List rate cards (admin)."""

    path = "/v1/rate-cards"
    tags = ["catalog"]

    @post(
        "/",
        sync_to_thread=True,
        status_code=201,
        responses=returns(RateCardOut, 201),
        guards=[requires()],
    )
    def create_rate_card(
        self,
        request: Request[Any, Any, Any],
        data: RateCardIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Create a rate card version; models it does not list keep the price of the card in
        force (``inherit``). 409 ``conflict``: a card of the currency already takes effect at
        that instant; 409 ``backdated_price_change``: usage is already priced at or after
        ``effective_from``; 409 ``model_removal_unconfirmed``: it would stop pricing a model
        still in use (see ``POST /v1/rate-cards/preview``)."""

        def produce() -> RateCardOut:
            return _card_out(
                catalog.create_rate_card(
                    db,
                    currency=data.currency,
                    effective_from=data.effective_from,
                    prices=_price_items(data.prices),
                    inherit=data.inherit,
                    remove_models=data.remove_models,
                    confirm_removals=data.confirm_removals,
                    **_usage_check(request, db, data.currency),
                )
            )

        return _post(request, db, idempotency_key, data, produce)

    @post(
        "/preview",
        sync_to_thread=True,
        status_code=200,
        responses={200: ResponseSpec(RateCardPreviewOut)},
        guards=[requires()],
    )
    def preview_rate_card(
        self,
        request: Request[Any, Any, Any],
        data: RateCardIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """A dry run of ``POST /v1/rate-cards``: the card it would create and what it changes
        per model (added, changed, unchanged, inherited, removed with blockers). Writes
        nothing."""

        def produce() -> RateCardPreviewOut:
            plan = catalog.plan_rate_card(
                db,
                currency=data.currency,
                effective_from=data.effective_from,
                prices=_price_items(data.prices),
                inherit=data.inherit,
                remove_models=data.remove_models,
                **_usage_check(request, db, data.currency),
            )
            return _preview_out(plan, data.confirm_removals)

        return run_idempotent(
            db, request, idempotency_key, body=data, status_code=200, produce=produce
        )

    @post(
        "/import-litellm",
        sync_to_thread=True,
        status_code=200,
        responses={200: ResponseSpec(LiteLLMImportOut)},
        guards=[requires()],
    )
    def import_litellm(
        self,
        request: Request[Any, Any, Any],
        data: LiteLLMImportIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Import LiteLLM's price map: a dry run by default (nothing written); with
        ``dry_run: false``, the missing models and one new card (see ``docs/pricing.md`` for
        the mapping and the rounding rule)."""
        if data.bundled == (data.price_map is not None):
            raise InvalidRequest("send bundled: true or price_map, one of the two")
        price_map = data.price_map or load_map(bundled_map_path())

        def produce() -> dict[str, Any]:
            report = import_litellm(
                db,
                price_map,
                effective_from=data.effective_from,
                currency=data.currency,
                markup_pct=data.markup_pct,
                providers=data.providers,
                strict=data.strict,
                apply=not data.dry_run,
                **_usage_check(request, db, data.currency),
            )
            return report_out(report)

        return run_idempotent(
            db, request, idempotency_key, body=data, status_code=200, produce=produce
        )

    @get("/", sync_to_thread=True, guards=[requires(*CARD_READERS)])
    def list_rate_cards(
        self,
        db: Session,
        currency: str | None = None,
        limit: Limit = 20,
        starting_after: str | None = None,
    ) -> RateCardList:
        """Rate cards in creation order, optionally of one ``currency``."""
        page = catalog.list_rate_cards(
            db, currency=currency, limit=limit, starting_after=starting_after
        )
        return RateCardList(data=[_card_out(c) for c in page.items], has_more=page.has_more)

    @get("/{card_id:str}", sync_to_thread=True, guards=[requires(*CARD_READERS)])
    def get_rate_card(self, card_id: str, db: Session) -> RateCardOut:
        """One rate card version."""
        return _card_out(catalog.get_rate_card(db, card_id))


class CostCardIn(BaseModel):
    """A new cost card version of an upstream vendor: what the operator pays it per model, in
    the rate-card shape (every price dimension); models it does not list keep the upstream's
    card in force (``inherit``)."""

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
        prices=_prices_out(card.prices),
    )


class CostCardsController(Controller):
    """Upstream cost cards (admin): what each vendor costs the operator, for the margin
    report."""

    path = "/v1/cost-cards"
    tags = ["catalog"]
    guards = [requires()]

    @post("/", sync_to_thread=True, status_code=201, responses=returns(CostCardOut, 201))
    def create_cost_card(
        self,
        request: Request[Any, Any, Any],
        data: CostCardIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Create a cost card version of an upstream; 409 ``conflict`` if one takes effect at
        that instant already. Cost cards bill nobody and may take effect in the past."""

        def produce() -> CostCardOut:
            return _cost_card_out(
                create_cost_card(
                    db,
                    upstream=data.upstream,
                    currency=data.currency,
                    effective_from=data.effective_from,
                    prices=_price_items(data.prices),
                    inherit=data.inherit,
                )
            )

        return _post(request, db, idempotency_key, data, produce)

    @get("/", sync_to_thread=True)
    def list_cost_cards(
        self, db: Session, upstream: str | None = None, currency: str | None = None
    ) -> CostCardList:
        """Cost cards, optionally of one upstream or currency."""
        cards = list_cost_cards(db, upstream=upstream, currency=currency)
        return CostCardList(data=[_cost_card_out(c) for c in cards])


class RatingWatermarkOut(BaseModel):
    """The latest usage instant already priced in a currency; new rate cards, contracts and
    reseller price books must take effect after it. Null: nothing priced yet."""

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


class ContractDiscountIn(BaseModel):
    """``pct`` off ``model``; without ``model``, off every model that has no own discount."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(default=None, min_length=1, max_length=128)
    pct: str = Field(examples=["15"], description=_PCT, json_schema_extra={"pattern": PCT_PATTERN})


class ContractIn(BaseModel):
    """A new contract version for an account (supersedes older ones from ``starts_at``). It
    locks a rate card, grants discounts, or both."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["rate_card_id"], "properties": {"rate_card_id": {"type": "string"}}},
                {"required": ["discounts"], "properties": {"discounts": {"minItems": 1}}},
            ]
        },
    )
    account_id: str = Field(min_length=1, max_length=64)
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    rate_card_id: str | None = None
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    discounts: list[ContractDiscountIn] = Field(default=[], max_length=1000)


class ContractOut(BaseModel):
    """A contract version."""

    id: str
    account_id: str
    currency: str
    version: int
    rate_card_id: str | None
    starts_at: datetime | None
    ends_at: datetime | None
    discounts: list[ContractDiscountIn]
    created_at: datetime


class ContractList(BaseModel):
    """A page of contracts."""

    data: list[ContractOut]
    has_more: bool


def _contract_out(c: catalog.ContractSpec) -> ContractOut:
    return ContractOut(
        id=c.id,
        account_id=c.account_id,
        currency=c.currency.code,
        version=c.version,
        rate_card_id=c.rate_card_id,
        starts_at=c.starts_at,
        ends_at=c.ends_at,
        discounts=[ContractDiscountIn(model=d.model, pct=pct_str(d.pct)) for d in c.discounts],
        created_at=c.created_at,
    )


class ContractsController(Controller):
    """Account contracts (admin)."""

    path = "/v1/contracts"
    tags = ["catalog"]
    guards = [requires()]

    @post("/", sync_to_thread=True, status_code=201, responses=returns(ContractOut, 201))
    def create_contract(
        self,
        request: Request[Any, Any, Any],
        data: ContractIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Create the account's next contract version; ``starts_at`` defaults to now."""
        account = get_account(db, data.account_id)
        if account.currency != data.currency.upper():
            raise InvalidRequest(
                f"account {account.id} pays in {account.currency}; its contract must too"
            )

        def produce() -> ContractOut:
            return _contract_out(
                catalog.create_contract(
                    db,
                    account_id=data.account_id,
                    currency=data.currency,
                    rate_card_id=data.rate_card_id,
                    starts_at=data.starts_at,
                    ends_at=data.ends_at,
                    discounts=[d.model_dump() for d in data.discounts],
                )
            )

        return _post(request, db, idempotency_key, data, produce)

    @get("/", sync_to_thread=True)
    def list_contracts(
        self,
        db: Session,
        account_id: str | None = None,
        limit: Limit = 20,
        starting_after: str | None = None,
    ) -> ContractList:
        """Contract versions in creation order, optionally of one ``account_id``."""
        page = catalog.list_contracts(
            db, account_id=account_id, limit=limit, starting_after=starting_after
        )
        return ContractList(data=[_contract_out(c) for c in page.items], has_more=page.has_more)

    @get("/{contract_id:str}", sync_to_thread=True)
    def get_contract(self, contract_id: str, db: Session) -> ContractOut:
        """One contract version."""
        return _contract_out(catalog.get_contract(db, contract_id))


# -- reseller price books -----------------------------------------------------------------


class ResellerPriceBookIn(BaseModel):
    """A reseller's retail prices for its sub-accounts: explicit per-model prices win, else
    ``markup_pct`` over the reseller's wholesale price, else the list price."""

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


class ResellerPriceBookList(BaseModel):
    """A page of reseller price books."""

    data: list[ResellerPriceBookOut]
    has_more: bool


def _book_out(b: catalog.ResellerPriceBook) -> ResellerPriceBookOut:
    return ResellerPriceBookOut(
        id=b.id,
        reseller_account_id=b.reseller_account_id,
        currency=b.currency.code,
        markup_pct=None if b.markup_pct is None else pct_str(b.markup_pct),
        prices=_prices_out(b.prices),
        effective_from=b.effective_from,
        created_at=b.created_at,
    )


class ResellerPriceBooksController(Controller):
    """Reseller retail price books (admin, or a reseller for its own sub-accounts)."""

    path = "/v1/reseller-price-books"
    tags = ["catalog"]
    guards = [requires("reseller")]

    @post("/", sync_to_thread=True, status_code=201, responses=returns(ResellerPriceBookOut, 201))
    def create_book(
        self,
        request: Request[Any, Any, Any],
        data: ResellerPriceBookIn,
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Create a reseller price book version; ``effective_from`` defaults to now."""
        reseller = _reseller_of(db, principal, data.reseller_account_id)
        assert reseller is not None

        def produce() -> ResellerPriceBookOut:
            return _book_out(
                catalog.create_reseller_price_book(
                    db,
                    reseller_account_id=reseller,
                    currency=data.currency,
                    markup_pct=data.markup_pct,
                    prices=_price_items(data.prices),
                    effective_from=data.effective_from,
                )
            )

        return _post(request, db, idempotency_key, data, produce)

    @get("/", sync_to_thread=True)
    def list_books(
        self,
        db: Session,
        principal: Principal,
        reseller_account_id: str | None = None,
        limit: Limit = 20,
        starting_after: str | None = None,
    ) -> ResellerPriceBookList:
        """Reseller price books in creation order, optionally of one reseller (a reseller key
        sees its own)."""
        if principal.role == "reseller":
            reseller_account_id = _reseller_of(db, principal, reseller_account_id)
        page = catalog.list_reseller_price_books(
            db, reseller_account_id=reseller_account_id, limit=limit, starting_after=starting_after
        )
        return ResellerPriceBookList(
            data=[_book_out(b) for b in page.items], has_more=page.has_more
        )

    @get("/{book_id:str}", sync_to_thread=True)
    def get_book(self, book_id: str, db: Session, principal: Principal) -> ResellerPriceBookOut:
        """One reseller price book version."""
        book = catalog.get_reseller_price_book(db, book_id)
        if principal.role == "reseller" and book.reseller_account_id != principal.account_id:
            raise NotFound(f"reseller price book {book_id} does not exist")
        return _book_out(book)


# -- price quotes -------------------------------------------------------------------------


class PriceQuoteOut(BaseModel):
    """The price that applies to an account's usage of a model at an instant, and its source
    (``contract`` | ``reseller_retail`` | ``list``). ``wholesale``: for a sub-account, what its
    reseller pays."""

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
    """Which price applies: contract -> reseller retail -> list. Admin and finance quote any
    account (or a hypothetical sub-account of a reseller); a reseller quotes itself and its
    own sub-accounts (existing, or hypothetical under itself); a customer or gateway the
    accounts its key can see. Only admin, finance and resellers see a sub-account's
    wholesale price."""

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
        """The resolved price for ``account_id`` of ``model`` at ``at`` (default now; RFC 3339
        with offset), as usage would be charged: a sub-account's reseller and an account's
        standing discounts are taken from the account (``reseller_account_id`` prices a
        hypothetical sub-account when ``account_id`` does not exist yet)."""
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


class TokenPackageIn(BaseModel):
    """A token package: ``tokens`` for ``price``, on ``models`` (empty: all), usable for
    ``valid_days`` after purchase."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=128, examples=["pk-1m"], json_schema_extra=_CATALOG_ID)
    name: str = Field(min_length=1, max_length=200)
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    price: str = Field(
        examples=["9.00"],
        description="decimal string, whole minor units",
        json_schema_extra={"pattern": MONEY_PATTERN},
    )
    tokens: int = Field(strict=True, ge=1, le=10**15, examples=[1_000_000])
    models: list[str] = Field(default=[], max_length=1000, json_schema_extra=_MODEL_IDS)
    valid_days: int = Field(strict=True, ge=1, le=36_500, examples=[30])


class TokenPackageOut(BaseModel):
    """A token package."""

    id: str
    name: str
    currency: str
    price: str
    tokens: int
    models: list[str]
    valid_days: int


class TokenPackageList(BaseModel):
    """A page of token packages."""

    data: list[TokenPackageOut]
    has_more: bool


def _package_out(p: catalog.PackageSpec) -> TokenPackageOut:
    return TokenPackageOut(
        id=p.id,
        name=p.name,
        currency=p.currency.code,
        price=_money(p.price),
        tokens=p.tokens,
        models=list(p.models),
        valid_days=p.valid_days,
    )


class PackagesController(Controller):
    """Token packages (admin)."""

    path = "/v1/packages"
    tags = ["catalog"]

    @post(
        "/",
        sync_to_thread=True,
        status_code=201,
        responses=returns(TokenPackageOut, 201),
        guards=[requires()],
    )
    def create_package(
        self,
        request: Request[Any, Any, Any],
        data: TokenPackageIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Add a token package; 409 ``conflict`` if the id exists."""

        def produce() -> TokenPackageOut:
            return _package_out(
                catalog.create_package(
                    db,
                    id=data.id,
                    name=data.name,
                    currency=data.currency,
                    price=data.price,
                    tokens=data.tokens,
                    models=data.models,
                    valid_days=data.valid_days,
                )
            )

        return _post(request, db, idempotency_key, data, produce)

    @get("/", sync_to_thread=True, guards=[requires(*READERS)])
    def list_packages(
        self, db: Session, limit: Limit = 20, starting_after: str | None = None
    ) -> TokenPackageList:
        """Token packages by id."""
        page = catalog.list_packages(db, limit=limit, starting_after=starting_after)
        return TokenPackageList(data=[_package_out(p) for p in page.items], has_more=page.has_more)

    @get("/{package_id:str}", sync_to_thread=True, guards=[requires(*READERS)])
    def get_package(self, package_id: str, db: Session) -> TokenPackageOut:
        """One token package."""
        return _package_out(catalog.get_package(db, package_id))


# -- coding plans -------------------------------------------------------------------------


class PlanWindow(BaseModel):
    """A quota window: at most ``limit`` requests or tokens per window."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["rolling_5h", "weekly", "monthly"]
    unit: Literal["requests", "tokens"]
    limit: int = Field(strict=True, ge=1, le=10**15, examples=[100])


class PlanIn(BaseModel):
    """A coding plan."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=128, examples=["coder"], json_schema_extra=_CATALOG_ID)
    name: str = Field(min_length=1, max_length=200)
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    monthly_fee: str = Field(
        examples=["20.00"],
        description="decimal string, whole minor units",
        json_schema_extra={"pattern": MONEY_PATTERN},
    )
    models: list[str] = Field(default=[], max_length=1000, json_schema_extra=_MODEL_IDS)
    windows: list[PlanWindow] = Field(max_length=6, json_schema_extra={"minItems": 1})
    on_exhausted: Literal["block", "wallet"]


class PlanOut(BaseModel):
    """A coding plan."""

    id: str
    name: str
    currency: str
    monthly_fee: str
    models: list[str]
    windows: list[PlanWindow]
    on_exhausted: str


class PlanList(BaseModel):
    """A page of plans."""

    data: list[PlanOut]
    has_more: bool


def _plan_out(p: catalog.PlanSpec) -> PlanOut:
    return PlanOut(
        id=p.id,
        name=p.name,
        currency=p.currency.code,
        monthly_fee=_money(p.monthly_fee),
        models=list(p.models),
        windows=[PlanWindow.model_validate(w, from_attributes=True) for w in p.windows],
        on_exhausted=p.on_exhausted,
    )


class PlansController(Controller):
    """Coding plans (admin)."""

    path = "/v1/plans"
    tags = ["catalog"]

    @post(
        "/",
        sync_to_thread=True,
        status_code=201,
        responses=returns(PlanOut, 201),
        guards=[requires()],
    )
    def create_plan(
        self,
        request: Request[Any, Any, Any],
        data: PlanIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Add a coding plan; 409 ``conflict`` if the id exists."""

        def produce() -> PlanOut:
            return _plan_out(
                catalog.create_plan(
                    db,
                    id=data.id,
                    name=data.name,
                    currency=data.currency,
                    monthly_fee=data.monthly_fee,
                    models=data.models,
                    windows=[w.model_dump() for w in data.windows],
                    on_exhausted=data.on_exhausted,
                )
            )

        return _post(request, db, idempotency_key, data, produce)

    @get("/", sync_to_thread=True, guards=[requires(*READERS)])
    def list_plans(
        self, db: Session, limit: Limit = 20, starting_after: str | None = None
    ) -> PlanList:
        """Coding plans by id."""
        page = catalog.list_plans(db, limit=limit, starting_after=starting_after)
        return PlanList(data=[_plan_out(p) for p in page.items], has_more=page.has_more)

    @get("/{plan_id:str}", sync_to_thread=True, guards=[requires(*READERS)])
    def get_plan(self, plan_id: str, db: Session) -> PlanOut:
        """One coding plan."""
        return _plan_out(catalog.get_plan(db, plan_id))


# -- top-up bonus rules -------------------------------------------------------------------


class BonusTierIn(BaseModel):
    """From ``min_amount`` on: ``bonus_pct`` percent of the top-up or a fixed
    ``bonus_amount`` (exactly one), expiring after ``bonus_expires_days`` (null: never)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [only("bonus_pct", "bonus_amount"), only("bonus_amount", "bonus_pct")]
        },
    )
    min_amount: str = Field(examples=["100.00"], json_schema_extra={"pattern": MONEY_PATTERN})
    bonus_pct: str | None = Field(
        default=None, examples=["5"], json_schema_extra={"pattern": PCT_PATTERN}
    )
    bonus_amount: str | None = Field(
        default=None, examples=["25.00"], json_schema_extra={"pattern": MONEY_PATTERN}
    )
    bonus_expires_days: int | None = Field(default=None, strict=True, ge=1, le=36_500)


class BonusRuleIn(BaseModel):
    """A top-up bonus rule version for ``currency`` (and ``owner_account_id``: a reseller's
    rule for its sub-accounts; null: the operator's). The highest tier reached applies."""

    model_config = ConfigDict(extra="forbid")
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    tiers: list[BonusTierIn] = Field(max_length=100)
    owner_account_id: str | None = Field(default=None, min_length=1, max_length=64)
    effective_from: AwareDatetime | None = None


class BonusRuleOut(BaseModel):
    """A top-up bonus rule version."""

    id: str
    currency: str
    owner_account_id: str | None
    effective_from: datetime
    tiers: list[BonusTierIn]
    created_at: datetime


class BonusRuleList(BaseModel):
    """A page of bonus rules."""

    data: list[BonusRuleOut]
    has_more: bool


def _rule_out(r: catalog.BonusRule) -> BonusRuleOut:
    return BonusRuleOut(
        id=r.id,
        currency=r.currency.code,
        owner_account_id=r.owner_account_id,
        effective_from=r.effective_from,
        tiers=[
            BonusTierIn(
                min_amount=_money(t.min_amount),
                bonus_pct=None if t.bonus_pct is None else pct_str(t.bonus_pct),
                bonus_amount=None if t.bonus_amount is None else _money(t.bonus_amount),
                bonus_expires_days=t.bonus_expires_days,
            )
            for t in r.tiers
        ],
        created_at=r.created_at,
    )


class TopupBonusRulesController(Controller):
    """Top-up bonus rules (admin; a reseller for top-ups it records on its sub-accounts)."""

    path = "/v1/topup-bonus-rules"
    tags = ["catalog"]
    guards = [requires("reseller")]

    @post("/", sync_to_thread=True, status_code=201, responses=returns(BonusRuleOut, 201))
    def create_rule(
        self,
        request: Request[Any, Any, Any],
        data: BonusRuleIn,
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Create a bonus rule version; ``effective_from`` defaults to now. A reseller's rules
        (``owner_account_id``; a reseller key always owns its rules) apply to top-ups it records
        on its sub-accounts."""
        owner = _reseller_of(db, principal, data.owner_account_id)

        def produce() -> BonusRuleOut:
            return _rule_out(
                catalog.create_topup_bonus_rule(
                    db,
                    currency=data.currency,
                    tiers=[t.model_dump(exclude_none=True) for t in data.tiers],
                    owner_account_id=owner,
                    effective_from=data.effective_from,
                )
            )

        return _post(request, db, idempotency_key, data, produce)

    @get("/", sync_to_thread=True)
    def list_rules(
        self,
        db: Session,
        principal: Principal,
        currency: str | None = None,
        owner_account_id: str | None = None,
        limit: Limit = 20,
        starting_after: str | None = None,
    ) -> BonusRuleList:
        """Bonus rule versions in creation order, optionally of one currency / owner (a
        reseller key sees its own)."""
        if principal.role == "reseller":
            owner_account_id = _reseller_of(db, principal, owner_account_id)
        page = catalog.list_topup_bonus_rules(
            db,
            currency=currency,
            owner_account_id=owner_account_id,
            limit=limit,
            starting_after=starting_after,
        )
        return BonusRuleList(data=[_rule_out(r) for r in page.items], has_more=page.has_more)

    @get("/{rule_id:str}", sync_to_thread=True)
    def get_rule(self, rule_id: str, db: Session, principal: Principal) -> BonusRuleOut:
        """One bonus rule version."""
        rule = catalog.get_topup_bonus_rule(db, rule_id)
        if principal.role == "reseller" and rule.owner_account_id != principal.account_id:
            raise NotFound(f"top-up bonus rule {rule_id} does not exist")
        return _rule_out(rule)


# -- failed-request policies --------------------------------------------------------------


class PolicyRules(BaseModel):
    """What happens to each kind of failed request; omitted kinds take the default policy's
    value (provider_error and empty_completion not billed, the rest billed)."""

    model_config = ConfigDict(extra="forbid")
    provider_error: Treatment | None = None
    provider_truncation: Treatment | None = None
    refusal: Treatment | None = None
    client_disconnect: Treatment | None = None
    empty_completion: Treatment | None = None


class PolicyIn(BaseModel):
    """A failed-request policy; posting an existing id creates its next version."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(
        min_length=1, max_length=128, examples=["lenient"], json_schema_extra=_CATALOG_ID
    )
    rules: PolicyRules = PolicyRules()


class PolicyOut(BaseModel):
    """A failed-request policy version with every rule resolved; ``builtin``: the default."""

    id: str
    version: int
    builtin: bool
    rules: dict[str, Treatment]
    created_at: datetime | None


class PolicyList(BaseModel):
    """A page of policies (latest versions)."""

    data: list[PolicyOut]
    has_more: bool


def _policy_out(p: catalog.FailedRequestPolicy) -> PolicyOut:
    return PolicyOut(
        id=p.id,
        version=p.version,
        builtin=p is catalog.DEFAULT_FAILED_REQUEST_POLICY,
        rules=dict(p.rules),
        created_at=p.created_at,
    )


class FailedRequestPoliciesController(Controller):
    """Failed-request policies (admin). ``default`` is built in."""

    path = "/v1/failed-request-policies"
    tags = ["catalog"]
    guards = [requires()]

    @post("/", sync_to_thread=True, status_code=201, responses=returns(PolicyOut, 201))
    def create_policy(
        self,
        request: Request[Any, Any, Any],
        data: PolicyIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Create a policy, or the next version of an existing id."""

        def produce() -> PolicyOut:
            return _policy_out(
                catalog.create_failed_request_policy(
                    db, id=data.id, rules=data.rules.model_dump(exclude_none=True)
                )
            )

        return _post(request, db, idempotency_key, data, produce)

    @get("/", sync_to_thread=True)
    def list_policies(
        self, db: Session, limit: Limit = 20, starting_after: str | None = None
    ) -> PolicyList:
        """Stored policies by id, latest version each (``default`` is built in, not listed)."""
        page = catalog.list_failed_request_policies(db, limit=limit, starting_after=starting_after)
        return PolicyList(data=[_policy_out(p) for p in page.items], has_more=page.has_more)

    @get("/{policy_id:str}", sync_to_thread=True)
    def get_policy(self, policy_id: str, db: Session) -> PolicyOut:
        """A policy's latest version (``default``: the built-in policy)."""
        return _policy_out(catalog.get_failed_request_policy(db, policy_id))

    @get("/{policy_id:str}/versions", sync_to_thread=True)
    def list_versions(self, policy_id: str, db: Session) -> PolicyList:
        """Every version of a policy, oldest first."""
        versions = catalog.list_failed_request_policy_versions(db, policy_id)
        return PolicyList(data=[_policy_out(p) for p in versions], has_more=False)
