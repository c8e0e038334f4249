"""Model prices and rate cards (pure values, no database).

A :class:`ModelPrice` holds one model's prices **per million tokens** as exact ``Decimal`` s,
plus the batch discount percentage. A :class:`RateCard` is an immutable, versioned set of
model prices in one currency with an ``effective_from`` instant; a newer card supersedes an
older one from its ``effective_from`` on (:func:`plans.pricebook.card_in_force`).

Exactness invariant (checked whenever a ``ModelPrice`` is built): every per-Mtok price is a
whole multiple of ``10**-12``, and so is every price times the batch discount percentage. With
currency atoms of ``10**-18`` (:data:`ledger.units.CURRENCY_ATOM_EXPONENT`) one token at any
component price, batch-discounted or not, is then a whole number of atoms, so rating any token
counts never rounds. Prices given in a spec have at most 6 decimals and percentages at most 2,
which keeps the default multipliers (0.1x, 1.25x, 2x) and any batch discount inside the bound;
derived prices (contract discounts, reseller markups) are checked when they are built and
raise :class:`~plans.errors.InvalidPrice` instead of rounding.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from types import MappingProxyType
from typing import Any

from ledger.errors import UnknownUnit
from ledger.units import Unit
from ledger.units import currency as currency_unit
from plans._exact import DecimalInput, has_places, is_aware, to_decimal
from plans.errors import InvalidCatalog, InvalidPrice, UnknownModel
from plans.price_fields import (
    DEFAULT_BATCH_DISCOUNT_PCT,
    DEFAULTS,
    EXACT_PRICE_PLACES,
    FEE_KINDS,
    MAX_MARKUP_PCT,
    PCT_PLACES,
    PRICE_EXTRAS,
    PRICE_FIELDS,
    SERVICE_TIERS,
    STANDARD_TIERS,
    ContextTier,
    ServiceTier,
    check_exact,
    checked_fees,
    context_threshold,
    list_of_objects,
    only_prices,
    parse_fees,
    parse_multiplier,
    parse_pct,
    plain,
    required_value,
    resolve_defaults,
    spec_required,
    spec_value,
    token_spec,
)

__all__ = [
    "FEE_KINDS",
    "PRICE_FIELDS",
    "SERVICE_TIERS",
    "STANDARD_TIERS",
    "ModelPrice",
    "RateCard",
    "price_for",
    "price_from_item",
]


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's prices per million tokens, exact, with its tiers and per-request fees.

    Build from untrusted input with :meth:`from_spec` (defaults, 6-decimal limit); the
    constructor itself only checks the exactness invariant, so derived prices with more
    decimals (e.g. 1.25x a 6-decimal input price) are allowed. The price fields added after
    the first version (30-minute and 12-hour cache writes, audio and image) may be left out of
    the constructor: they then take their defaults (see :data:`DEFAULTS`).

    Attributes:
        input_per_mtok: uncached text (and other) input tokens.
        output_per_mtok: output tokens that are not reasoning, audio or image tokens.
        cache_read_per_mtok: input tokens read from the prompt cache.
        cache_write_5m_per_mtok / _30m_ / _1h_ / _12h_: input tokens written to the cache
            with that lifetime (Anthropic: 5 m, 1 h; OpenAI: 30 m, 12 h).
        reasoning_per_mtok: the reasoning part of the output tokens.
        batch_discount_pct: percent off every token component of a batch request (0..100)
            when no ``batch`` service tier is given.
        input_audio_per_mtok / input_image_per_mtok: uncached audio / image input tokens.
        output_audio_per_mtok / output_image_per_mtok: the audio / image part of the output.
        request_fees: ``(kind, price per request)`` pairs, kinds from :data:`FEE_KINDS`.
        service_tiers: prices of the non-standard service tiers.
        context_tiers: prices for prompts above a size, thresholds ascending.

    Raises:
        InvalidPrice: a field is not a finite non-negative ``Decimal``, a price is finer than
            ``10**-12`` per Mtok, the discount is outside 0..100 or has > 2 decimals, a
            batch-discounted or tier-multiplied price would be finer than one atom per token,
            or a fee finer than one atom.
        InvalidCatalog: unknown fee kinds or tiers, context thresholds not ascending.
    """

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal
    cache_write_5m_per_mtok: Decimal
    cache_write_1h_per_mtok: Decimal
    reasoning_per_mtok: Decimal
    batch_discount_pct: Decimal = DEFAULT_BATCH_DISCOUNT_PCT
    cache_write_30m_per_mtok: Decimal = None  # type: ignore[assignment]  # default: 5 m
    cache_write_12h_per_mtok: Decimal = None  # type: ignore[assignment]  # default: 1 h
    input_audio_per_mtok: Decimal = None  # type: ignore[assignment]  # default: input
    input_image_per_mtok: Decimal = None  # type: ignore[assignment]  # default: input
    output_audio_per_mtok: Decimal = None  # type: ignore[assignment]  # default: output
    output_image_per_mtok: Decimal = None  # type: ignore[assignment]  # default: output
    request_fees: tuple[tuple[str, Decimal], ...] = ()
    service_tiers: tuple[ServiceTier, ...] = ()
    context_tiers: tuple[ContextTier, ...] = ()
    #: the rater's per-token table, built on first use (:mod:`plans.rating`)
    rating_table: object = field(default=None, init=False, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        """Fill the later price fields' defaults, then check every field is exact."""
        for name, source, multiplier in DEFAULTS:
            if getattr(self, name) is None and multiplier == 1:
                object.__setattr__(self, name, getattr(self, source))
        for name in (*PRICE_FIELDS, "batch_discount_pct"):
            value = getattr(self, name)
            if not isinstance(value, Decimal):
                raise InvalidPrice(
                    f"{name} must be a Decimal, not {type(value).__name__}; "
                    "use ModelPrice.from_spec for strings",
                    field=name,
                )
            if not value.is_finite() or value < 0:
                raise InvalidPrice(
                    f"{name} must be finite and non-negative, got {value}", field=name
                )
        pct = Fraction(self.batch_discount_pct)
        if pct > 100 or not has_places(pct, PCT_PLACES):
            raise InvalidPrice(
                f"batch_discount_pct must be 0..100 with at most {PCT_PLACES} decimals, "
                f"got {self.batch_discount_pct}",
                field="batch_discount_pct",
            )
        for name in PRICE_FIELDS:
            price = Fraction(getattr(self, name))
            check_exact(getattr(self, name), name)
            if not has_places(price * pct / 100, EXACT_PRICE_PLACES):
                raise InvalidPrice(
                    f"a {self.batch_discount_pct}% batch discount on {name} = "
                    f"{getattr(self, name)} is finer than one currency atom per token",
                    field=name,
                )
        self._check_extras()

    def _check_extras(self) -> None:
        object.__setattr__(self, "request_fees", checked_fees(self.request_fees))
        tiers = tuple(self.service_tiers)
        names = [t.name for t in tiers]
        if len(set(names)) != len(names):
            raise InvalidCatalog("a service tier is given twice", field="service_tiers")
        for tier in tiers:
            if tier.multiplier is not None:
                for band in (self, *(c.price for c in self.context_tiers)):
                    band.multiplied(tier.multiplier, why=f"service tier {tier.name}")
        object.__setattr__(
            self, "service_tiers", tuple(sorted(tiers, key=lambda t: SERVICE_TIERS.index(t.name)))
        )
        bands = tuple(self.context_tiers)
        for before, after in pairwise(bands):
            if after.above_input_tokens <= before.above_input_tokens:
                raise InvalidCatalog(
                    "context_tiers must be in ascending above_input_tokens, each once",
                    field="context_tiers",
                )
        object.__setattr__(self, "context_tiers", bands)

    @property
    def fees(self) -> dict[str, Decimal]:
        """Per-request fees by kind."""
        return dict(self.request_fees)

    def tier(self, name: str) -> ServiceTier | None:
        """The service tier ``name`` as this price defines it, or ``None``."""
        for t in self.service_tiers:
            if t.name == name:
                return t
        return None

    def band(self, prompt_tokens: int) -> ModelPrice:
        """The prices of a request with a prompt of ``prompt_tokens``.

        The highest context tier it is above, else these.
        """
        chosen = self
        for c in self.context_tiers:
            if prompt_tokens > c.above_input_tokens:
                chosen = c.price
        return chosen

    def multiplied(self, multiplier: Decimal, *, why: str) -> ModelPrice:
        """The token prices times ``multiplier`` (a tier's), fees and discount unchanged.

        Raises:
            InvalidPrice: a multiplied price would not rate exactly.
        """
        return self._scaled_tokens(Fraction(multiplier), why=why)

    def _scaled_tokens(self, ratio: Fraction, *, why: str) -> ModelPrice:
        scaled: dict[str, Any] = {
            name: to_decimal(
                Fraction(getattr(self, name)) * ratio, what=f"{name} ({why})", error=InvalidPrice
            )
            for name in PRICE_FIELDS
        }
        try:
            return ModelPrice(batch_discount_pct=self.batch_discount_pct, **scaled)
        except InvalidPrice as exc:
            raise InvalidPrice(
                f"{why}: {exc.detail}; choose a figure that keeps prices exact", **exc.extra
            ) from None

    @classmethod
    def from_spec(
        cls,
        *,
        input_per_mtok: DecimalInput,
        output_per_mtok: DecimalInput,
        batch_discount_pct: DecimalInput | None = None,
        request_fees: Mapping[str, object] | None = None,
        service_tiers: Mapping[str, Mapping[str, object]] | None = None,
        context_tiers: Iterable[Mapping[str, object]] | None = None,
        **optional: DecimalInput | None,
    ) -> ModelPrice:
        """Build a price from admin/API input, applying the documented defaults.

        Omitted prices default to (:data:`DEFAULTS`): cache read 0.1x input, 5-minute cache
        write 1.25x input, 30-minute write = the 5-minute one, 1-hour write 2x input, 12-hour
        write = the 1-hour one, reasoning = output, audio and image input = input, audio and
        image output = output; the batch discount defaults to 50 (% off every token component
        of a batch request).

        Args:
            input_per_mtok: price per million uncached input tokens.
            output_per_mtok: price per million output tokens.
            batch_discount_pct: optional batch discount percentage (0..100, <= 2 decimals).
            request_fees: ``{kind: price per request}`` (kinds in :data:`FEE_KINDS`).
            service_tiers: ``{tier: {"multiplier": "0.5"}}`` or ``{tier: {<prices>}}`` (a
                full price spec, defaults from its own input and output prices).
            context_tiers: ``[{"above_input_tokens": 200000, <prices>}]``: each a full price
                spec (defaults from its own prices) for prompts above the size.
            optional: the other per-Mtok prices of :data:`PRICE_FIELDS`.

        Raises:
            InvalidPrice: a float, NaN/infinity, a malformed or negative price, a given price
                with more than 6 decimals, a discount outside 0..100 / with > 2 decimals, a
                multiplier that is not positive or has > 4 decimals.
            InvalidCatalog: unknown fields, fee kinds or tiers.
        """
        unknown = sorted(set(optional) - set(PRICE_FIELDS))
        if unknown:
            raise InvalidCatalog(f"unknown price fields {unknown}", field=unknown[0])
        base = resolve_defaults(input_per_mtok, output_per_mtok, optional, what="")
        discount = (
            DEFAULT_BATCH_DISCOUNT_PCT
            if batch_discount_pct is None
            else parse_pct(batch_discount_pct, what="batch_discount_pct")
        )
        fees = parse_fees(request_fees)
        bands = tuple(_context_tier(cls, item, discount) for item in (context_tiers or ()))
        tiers = tuple(
            _service_tier(cls, name, spec, discount, request_fees)
            for name, spec in (service_tiers or {}).items()
        )
        return cls(
            batch_discount_pct=discount,
            request_fees=fees,
            service_tiers=tiers,
            context_tiers=bands,
            **base,
        )

    def scaled(self, ratio: Fraction, *, why: str) -> ModelPrice:
        """Every price multiplied by an exact ratio.

        Tokens, fees, tiers' own prices and context tiers are scaled; the batch discount and
        tier multipliers are unchanged.

        Args:
            ratio: a non-negative exact ratio, e.g. ``Fraction(85, 100)`` for 15% off.
            why: what the scaling is (``"contract discount 15%"``), for error messages.

        Raises:
            InvalidPrice: a scaled price (or its batch-discounted form) is not exact to one
                currency atom per token.
        """
        if ratio < 0:
            raise InvalidPrice(f"{why}: a price cannot be scaled by a negative ratio {ratio}")
        tokens = self._scaled_tokens(ratio, why=why)
        fees = tuple(
            (
                kind,
                to_decimal(
                    Fraction(fee) * ratio, what=f"request_fees.{kind} ({why})", error=InvalidPrice
                ),
            )
            for kind, fee in self.request_fees
        )
        tiers = tuple(
            t if t.price is None else replace(t, price=t.price.scaled(ratio, why=why))
            for t in self.service_tiers
        )
        bands = tuple(replace(c, price=c.price.scaled(ratio, why=why)) for c in self.context_tiers)
        try:
            return replace(tokens, request_fees=fees, service_tiers=tiers, context_tiers=bands)
        except InvalidPrice as exc:
            raise InvalidPrice(
                f"{why}: {exc.detail}; choose a percentage that keeps prices exact", **exc.extra
            ) from None

    def with_discount(self, pct: DecimalInput) -> ModelPrice:
        """This price with ``pct`` percent off every component (``pct`` in 0..100, <= 2 dp).

        Raises:
            InvalidPrice: the percentage is invalid or the result would not rate exactly.
        """
        dec = parse_pct(pct, what="discount_pct")
        return self.scaled((100 - Fraction(dec)) / 100, why=f"discount {dec}%")

    def with_markup(self, pct: DecimalInput) -> ModelPrice:
        """This price with ``pct`` percent added to every component (``pct`` >= 0, <= 2 dp).

        Raises:
            InvalidPrice: the percentage is invalid or the result would not rate exactly.
        """
        dec = parse_pct(pct, what="markup_pct", maximum=MAX_MARKUP_PCT)
        return self.scaled((100 + Fraction(dec)) / 100, why=f"markup {dec}%")

    def to_spec(self) -> dict[str, object]:
        """Every resolved price as decimal strings (tiers and context tiers nested).

        The shape :meth:`from_spec` reads back to an equal price.
        """
        out: dict[str, object] = {name: plain(getattr(self, name)) for name in PRICE_FIELDS}
        out["batch_discount_pct"] = plain(self.batch_discount_pct)
        if self.request_fees:
            out["request_fees"] = {k: plain(v) for k, v in self.request_fees}
        if self.service_tiers:
            out["service_tiers"] = {
                t.name: (
                    {"multiplier": plain(t.multiplier)}
                    if t.multiplier is not None
                    else token_spec(t.price)  # type: ignore[arg-type]
                )
                for t in self.service_tiers
            }
        if self.context_tiers:
            out["context_tiers"] = [
                {"above_input_tokens": c.above_input_tokens, **token_spec(c.price)}
                for c in self.context_tiers
            ]
        return out

    @classmethod
    def from_stored(cls, spec: Mapping[str, object]) -> ModelPrice:
        """A price from :meth:`to_spec`.

        Stored prices are resolved: nothing defaults, and they may have more than 6 decimals.
        """

        def dec(value: object) -> Decimal:
            return Decimal(str(value))

        def tokens(item: Mapping[str, object]) -> dict[str, Any]:
            return {name: dec(item[name]) for name in PRICE_FIELDS}

        discount = dec(spec["batch_discount_pct"])
        fees = spec.get("request_fees") or {}
        assert isinstance(fees, Mapping)
        tiers_spec = spec.get("service_tiers") or {}
        assert isinstance(tiers_spec, Mapping)
        tiers = []
        for name, t in tiers_spec.items():
            if "multiplier" in t:
                tiers.append(ServiceTier(name, multiplier=dec(t["multiplier"])))
            else:
                tiers.append(
                    ServiceTier(
                        name,
                        price=cls.from_stored(
                            {**t, "batch_discount_pct": discount, "request_fees": fees}
                        ),
                    )
                )
        bands_spec = spec.get("context_tiers") or []
        assert isinstance(bands_spec, list)
        bands = tuple(
            ContextTier(int(c["above_input_tokens"]), cls(batch_discount_pct=discount, **tokens(c)))
            for c in bands_spec
        )
        return cls(
            batch_discount_pct=discount,
            request_fees=tuple((str(k), dec(v)) for k, v in fees.items()),
            service_tiers=tuple(tiers),
            context_tiers=bands,
            **tokens(spec),
        )


def _context_tier(
    cls: type[ModelPrice], item: Mapping[str, object], discount: Decimal
) -> ContextTier:
    """A ``context_tiers`` item of a spec: a full price (defaults from its own prices)."""
    return ContextTier(
        context_threshold(item),
        cls(
            batch_discount_pct=discount,
            **resolve_defaults(
                required_value(item, "input_per_mtok", "context_tiers"),
                required_value(item, "output_per_mtok", "context_tiers"),
                only_prices(item, "context_tiers", extra={"above_input_tokens"}),
                what="context_tiers",
            ),
        ),
    )


def _service_tier(
    cls: type[ModelPrice],
    name: object,
    spec: object,
    discount: Decimal,
    request_fees: Mapping[str, object] | None,
) -> ServiceTier:
    """A ``service_tiers`` entry of a spec.

    A multiplier, or prices of its own (with the price's batch discount and fees).
    """
    if not isinstance(spec, Mapping):
        raise InvalidCatalog(f"service_tiers.{name} must be an object", field="service_tiers")
    if "multiplier" in spec:
        return ServiceTier(str(name), multiplier=parse_multiplier(spec, name))
    what = f"service_tiers.{name}"
    return ServiceTier(
        str(name),
        price=cls.from_spec(
            input_per_mtok=required_value(spec, "input_per_mtok", what),
            output_per_mtok=required_value(spec, "output_per_mtok", what),
            batch_discount_pct=discount,
            request_fees=request_fees,
            context_tiers=list_of_objects(spec.get("context_tiers"), what),
            **only_prices(spec, what, extra={"context_tiers"}),
        ),
    )


@dataclass(frozen=True, slots=True)
class RateCard:
    """An immutable, versioned set of model prices in one currency.

    A card is never edited; a new card with a later ``effective_from`` supersedes it.

    Attributes:
        id: the card's id (one id per version); stored on rated usage records.
        currency: the currency the prices are in.
        effective_from: aware instant from which the card is in force (inclusive).
        prices: model id -> :class:`ModelPrice` (read-only).

    Raises:
        InvalidCatalog: empty id, a non-currency unit, a naive ``effective_from``, no prices,
            or a price that is not a ``ModelPrice``.
    """

    id: str
    currency: Unit
    effective_from: datetime
    prices: Mapping[str, ModelPrice]

    def __post_init__(self) -> None:
        """Check the id, currency, instant and prices; freeze the prices."""
        if not isinstance(self.id, str) or not self.id:
            raise InvalidCatalog("a rate card needs a non-empty id")
        if not isinstance(self.currency, Unit) or not self.currency.is_currency:
            raise InvalidCatalog(
                f"rate card {self.id}: currency must be a currency unit, got {self.currency}"
            )
        if not isinstance(self.effective_from, datetime) or not is_aware(self.effective_from):
            raise InvalidCatalog(
                f"rate card {self.id}: effective_from must be a timezone-aware datetime"
            )
        prices = dict(self.prices)
        if not prices:
            raise InvalidCatalog(f"rate card {self.id} prices no model")
        for model, price in prices.items():
            if not isinstance(model, str) or not model:
                raise InvalidCatalog(f"rate card {self.id}: model ids must be non-empty strings")
            if not isinstance(price, ModelPrice):
                raise InvalidCatalog(f"rate card {self.id}: price for {model} is not a ModelPrice")
        object.__setattr__(self, "prices", MappingProxyType(prices))

    def __hash__(self) -> int:
        """Hash by id, currency and instant (the prices mapping is not hashable)."""
        return hash((self.id, self.currency, self.effective_from))

    @classmethod
    def from_spec(
        cls,
        *,
        id: str,
        currency: Unit | str,
        effective_from: datetime,
        prices: Iterable[Mapping[str, object]],
    ) -> RateCard:
        """Build a card from the ``POST /v1/rate-cards`` shape.

        Args:
            id: the new card's id.
            currency: a currency unit or ISO 4217 code.
            effective_from: aware instant the card takes effect.
            prices: items like ``{"model": "m", "input_per_mtok": "3.00",
                "output_per_mtok": "15.00", "cache_read_per_mtok"?: ..., ...}``.

        Raises:
            InvalidCatalog: an unknown currency, a missing/duplicate model, unknown keys, or
                the structural errors of :class:`RateCard`.
            InvalidPrice: a bad price (see :meth:`ModelPrice.from_spec`).
        """
        if isinstance(currency, str):
            try:
                currency = currency_unit(currency)
            except UnknownUnit as exc:
                raise InvalidCatalog(exc.detail) from None
        allowed = {"model", *PRICE_FIELDS, *PRICE_EXTRAS}
        built: dict[str, ModelPrice] = {}
        for item in prices:
            unknown = sorted(set(item) - allowed)
            if unknown:
                raise InvalidCatalog(f"unknown price fields {unknown}; allowed: {sorted(allowed)}")
            model = item.get("model")
            if not isinstance(model, str) or not model:
                raise InvalidCatalog("each price needs a non-empty 'model'")
            if model in built:
                raise InvalidCatalog(f"model {model} is priced twice on card {id}")
            built[model] = price_from_item(item, model)
        return cls(id=id, currency=currency, effective_from=effective_from, prices=built)

    def price_for(self, model: str) -> ModelPrice:
        """This card's price for ``model`` (see :func:`price_for`)."""
        return price_for(self, model)


def price_from_item(item: Mapping[str, object], model: str) -> ModelPrice:
    """One ``prices`` item of a rate card (``{"model", "input_per_mtok", ...}``) as a price.

    Raises:
        InvalidCatalog, InvalidPrice: see :meth:`ModelPrice.from_spec`.
    """
    fees = item.get("request_fees")
    tiers = item.get("service_tiers")
    bands = item.get("context_tiers")
    if fees is not None and not isinstance(fees, Mapping):
        raise InvalidCatalog(f"request_fees for {model} must be an object", model=model)
    if tiers is not None and not isinstance(tiers, Mapping):
        raise InvalidCatalog(f"service_tiers for {model} must be an object", model=model)
    if bands is not None and not isinstance(bands, list):
        raise InvalidCatalog(f"context_tiers for {model} must be a list", model=model)
    return ModelPrice.from_spec(
        input_per_mtok=spec_required(item, "input_per_mtok", model),
        output_per_mtok=spec_required(item, "output_per_mtok", model),
        batch_discount_pct=spec_value(item, "batch_discount_pct", model),
        request_fees=fees,
        service_tiers=tiers,
        context_tiers=bands,
        **{
            name: spec_value(item, name, model)
            for name in PRICE_FIELDS
            if name not in ("input_per_mtok", "output_per_mtok")
        },
    )


def price_for(card: RateCard, model: str) -> ModelPrice:
    """The price of ``model`` on ``card``.

    Raises:
        UnknownModel: the card does not price ``model``.
    """
    try:
        return card.prices[model]
    except KeyError:
        raise UnknownModel(
            f"model {model!r} is not priced on rate card {card.id}", model=model, card_id=card.id
        ) from None
