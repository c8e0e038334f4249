"""Model prices on the wire: per-Mtok token prices, service and context tiers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.routes.catalog._common import PCT_DESC, pct_str, price_field, price_str
from api.schemas import PCT_PATTERN
from ledger.amounts import Amount
from plans.prices import PRICE_FIELDS, ModelPrice


class _OtherPricesIn(BaseModel):
    """Per-Mtok prices of the token kinds other than input and output, each optional."""

    model_config = ConfigDict(extra="forbid")
    cache_read_per_mtok: str | None = price_field(optional=True)
    cache_write_5m_per_mtok: str | None = price_field(optional=True)
    cache_write_30m_per_mtok: str | None = price_field(optional=True)
    cache_write_1h_per_mtok: str | None = price_field(optional=True)
    cache_write_12h_per_mtok: str | None = price_field(optional=True)
    reasoning_per_mtok: str | None = price_field(optional=True)
    input_audio_per_mtok: str | None = price_field(optional=True)
    input_image_per_mtok: str | None = price_field(optional=True)
    output_audio_per_mtok: str | None = price_field(optional=True)
    output_image_per_mtok: str | None = price_field(optional=True)


class _InputOutputPricesIn(BaseModel):
    input_per_mtok: str = price_field()
    output_per_mtok: str = price_field()


# pydantic orders a model's fields from its last base to its first, then its own
class _TokenPricesIn(_OtherPricesIn, _InputOutputPricesIn):
    """Per-Mtok token prices.

    Omitted ones take their defaults from this object's own input and output prices.
    """


class ContextTierIn(_TokenPricesIn):
    """Prices of a whole request whose prompt is larger than ``above_input_tokens``.

    Every input token, cached and written ones included.
    """

    above_input_tokens: int = Field(ge=1, le=10**9, examples=[200_000])


class _TierPricesIn(BaseModel):
    multiplier: str | None = Field(
        default=None, examples=["0.5"], description="decimal string > 0, at most 4 decimals"
    )
    input_per_mtok: str | None = price_field(optional=True)
    output_per_mtok: str | None = price_field(optional=True)


class ServiceTierIn(_OtherPricesIn, _TierPricesIn):
    """A service tier.

    ``multiplier`` of the standard prices (of the context tier the request falls in), or prices of
    its own (``input_per_mtok``, ``output_per_mtok``, ...; optional ``context_tiers``). Fees are
    never multiplied.
    """

    context_tiers: list[ContextTierIn] | None = Field(default=None, max_length=10)


FeeKind = Literal["web_search", "web_fetch", "code_execution", "file_search", "tool_call"]
TierName = Literal["flex", "priority", "batch", "scale", "fast", "ultrafast"]


class ModelPriceIn(_TokenPricesIn):
    """One model's prices per million tokens.

    Omitted: cache read 0.1x input, 5-minute cache write 1.25x input (30-minute: the same), 1-hour
    cache write 2x input (12-hour: the same), reasoning = output, audio and image input = input,
    audio and image output = output, batch discount 50 %. ``request_fees``: money per request (web
    search, ...), counted by records' ``tool_calls``. ``service_tiers``: flex, priority, batch,
    scale, fast (a record of a tier the card does not price is refused, except batch, which takes
    the batch discount). ``context_tiers``: prices for larger prompts.
    """

    model: str = Field(min_length=1, max_length=128)
    batch_discount_pct: str | None = Field(
        default=None,
        examples=["50"],
        description=PCT_DESC,
        json_schema_extra={"pattern": PCT_PATTERN},
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


class TokenPricesOut(BaseModel):
    """Resolved prices per million tokens, one per token kind (``PRICE_FIELDS``)."""

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


class _AboveInputTokens(BaseModel):
    above_input_tokens: int


# pydantic orders a model's fields from its last base to its first, then its own
class ContextTierOut(TokenPricesOut, _AboveInputTokens):
    """A context tier with its resolved prices."""


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


class _Model(BaseModel):
    model: str


class ModelPriceOut(TokenPricesOut, _Model):
    """One model's resolved prices, per-request fees, service tiers and context tiers.

    Prices are per million tokens, with the defaults applied when the model was created.
    """

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


def prices_out(prices: Any) -> list[ModelPriceOut]:
    """Wire form of a card's prices (a mapping of model to price), by model."""
    return [price_out(model, prices[model]) for model in sorted(prices)]


def price_items(prices: list[ModelPriceIn]) -> list[dict[str, object]]:
    """The prices sent, as the catalog services take them (omitted fields left out)."""
    return [p.model_dump(exclude_none=True) for p in prices]


def money_str(amount: Amount) -> str:
    """An amount as a decimal string in its currency's minor units."""
    return amount.format()


# -- models -------------------------------------------------------------------------------
