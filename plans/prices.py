"""Model prices and rate cards (pure values, no database).

A :class:`ModelPrice` holds one model's prices **per million tokens** as exact ``Decimal`` s,
plus the batch discount percentage. A :class:`RateCard` is an immutable, versioned set of
model prices in one currency with an ``effective_from`` instant; a newer card supersedes an
older one from its ``effective_from`` on (:func:`card_in_force`).

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
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType

from ledger.errors import UnknownUnit
from ledger.units import CURRENCY_ATOM_EXPONENT, Unit
from ledger.units import currency as currency_unit
from plans._exact import DecimalInput, has_places, is_aware, parse_decimal, to_decimal
from plans.errors import InvalidCatalog, InvalidPrice, InvalidUsage, NoRateInForce, UnknownModel

#: Prices are quoted per this many tokens.
TOKENS_PER_MTOK = 1_000_000
#: Most decimal places a price given in a spec (API, admin input) may have.
GIVEN_PRICE_PLACES = 6
#: Most decimal places a percentage (batch discount, contract discount, markup) may have.
PCT_PLACES = 2
#: Finest per-Mtok price that still makes one token a whole number of currency atoms.
EXACT_PRICE_PLACES = CURRENCY_ATOM_EXPONENT - 6

#: Default cache-read price as a multiple of the input price.
CACHE_READ_MULTIPLIER = Decimal("0.1")
#: Default 5-minute cache-write price as a multiple of the input price.
CACHE_WRITE_5M_MULTIPLIER = Decimal("1.25")
#: Default 1-hour cache-write price as a multiple of the input price.
CACHE_WRITE_1H_MULTIPLIER = Decimal("2")
#: Default batch discount, percent off every token component of a batch request.
DEFAULT_BATCH_DISCOUNT_PCT = Decimal("50")

#: The per-Mtok price fields of :class:`ModelPrice`, in line order.
PRICE_FIELDS: tuple[str, ...] = (
    "input_per_mtok",
    "cache_read_per_mtok",
    "cache_write_5m_per_mtok",
    "cache_write_1h_per_mtok",
    "output_per_mtok",
    "reasoning_per_mtok",
)

_HUNDRED = Decimal(100)


#: The largest markup a price book or contract may state (its column holds 7 whole digits).
MAX_MARKUP_PCT = Decimal(1_000_000)
#: The largest price per million tokens accepted (derived prices, e.g. 2x for a 1-hour cache
#: write, must still fit their columns, which hold 18 whole digits).
MAX_PRICE_PER_MTOK = Decimal(10**12)


def parse_pct(value: object, *, what: str, maximum: Decimal | None = _HUNDRED) -> Decimal:
    """Parse a percentage: a decimal string/Decimal/int in ``0..maximum`` with <= 2 decimals.

    Args:
        value: the percentage, e.g. ``"12.5"``.
        what: the field name, for the error message.
        maximum: inclusive upper bound (100 for discounts; ``None`` for markups).

    Raises:
        InvalidPrice: a float, a malformed or negative value, more than 2 decimals, or above
            ``maximum``.
    """
    return parse_decimal(
        value, what=what, max_places=PCT_PLACES, error=InvalidPrice, maximum=maximum
    )


def parse_price(value: object, *, what: str) -> Decimal:
    """Parse a given per-Mtok price: a non-negative decimal with at most 6 decimals.

    Raises:
        InvalidPrice: a float, NaN/infinity, a malformed or negative value, or > 6 decimals.
    """
    return parse_decimal(
        value,
        what=what,
        max_places=GIVEN_PRICE_PLACES,
        error=InvalidPrice,
        maximum=MAX_PRICE_PER_MTOK,
    )


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's prices per million tokens, exact.

    Build from untrusted input with :meth:`from_spec` (defaults, 6-decimal limit); the
    constructor itself only checks the exactness invariant, so derived prices with more
    decimals (e.g. 1.25x a 6-decimal input price) are allowed.

    Attributes:
        input_per_mtok: uncached input tokens.
        output_per_mtok: output tokens that are not reasoning tokens.
        cache_read_per_mtok: input tokens read from the prompt cache.
        cache_write_5m_per_mtok: input tokens written to the 5-minute cache.
        cache_write_1h_per_mtok: input tokens written to the 1-hour cache.
        reasoning_per_mtok: the reasoning part of the output tokens.
        batch_discount_pct: percent off every token component of a batch request (0..100).

    Raises:
        InvalidPrice: a field is not a finite non-negative ``Decimal``, a price is finer than
            ``10**-12`` per Mtok, the discount is outside 0..100 or has > 2 decimals, or a
            batch-discounted price would be finer than one atom per token.
    """

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal
    cache_write_5m_per_mtok: Decimal
    cache_write_1h_per_mtok: Decimal
    reasoning_per_mtok: Decimal
    batch_discount_pct: Decimal = DEFAULT_BATCH_DISCOUNT_PCT

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, Decimal):
                raise InvalidPrice(
                    f"{f.name} must be a Decimal, not {type(value).__name__}; "
                    "use ModelPrice.from_spec for strings",
                    field=f.name,
                )
            if not value.is_finite() or value < 0:
                raise InvalidPrice(
                    f"{f.name} must be finite and non-negative, got {value}", field=f.name
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
            if not has_places(price, EXACT_PRICE_PLACES):
                raise InvalidPrice(
                    f"{name} = {getattr(self, name)} is finer than one currency atom per token "
                    f"(at most {EXACT_PRICE_PLACES} decimals per Mtok)",
                    field=name,
                )
            if not has_places(price * pct / 100, EXACT_PRICE_PLACES):
                raise InvalidPrice(
                    f"a {self.batch_discount_pct}% batch discount on {name} = "
                    f"{getattr(self, name)} is finer than one currency atom per token",
                    field=name,
                )

    @classmethod
    def from_spec(
        cls,
        *,
        input_per_mtok: DecimalInput,
        output_per_mtok: DecimalInput,
        cache_read_per_mtok: DecimalInput | None = None,
        cache_write_5m_per_mtok: DecimalInput | None = None,
        cache_write_1h_per_mtok: DecimalInput | None = None,
        reasoning_per_mtok: DecimalInput | None = None,
        batch_discount_pct: DecimalInput | None = None,
    ) -> ModelPrice:
        """Build a price from admin/API input, applying the documented defaults.

        Omitted prices default to: cache read 0.1x input, 5-minute cache write 1.25x input,
        1-hour cache write 2x input, reasoning = the output price; the batch discount
        defaults to 50 (% off every token component of a batch request).

        Args:
            input_per_mtok: price per million uncached input tokens.
            output_per_mtok: price per million output tokens.
            cache_read_per_mtok: optional explicit cache-read price.
            cache_write_5m_per_mtok: optional explicit 5-minute cache-write price.
            cache_write_1h_per_mtok: optional explicit 1-hour cache-write price.
            reasoning_per_mtok: optional explicit reasoning price.
            batch_discount_pct: optional batch discount percentage (0..100, <= 2 decimals).

        Returns:
            The validated price.

        Raises:
            InvalidPrice: a float, NaN/infinity, a malformed or negative price, a given price
                with more than 6 decimals, or a discount outside 0..100 / with > 2 decimals.
        """
        inp = parse_price(input_per_mtok, what="input_per_mtok")
        out = parse_price(output_per_mtok, what="output_per_mtok")

        def given_or(value: DecimalInput | None, what: str, multiplier: Decimal) -> Decimal:
            if value is not None:
                return parse_price(value, what=what)
            return to_decimal(Fraction(inp) * Fraction(multiplier), what=what, error=InvalidPrice)

        return cls(
            input_per_mtok=inp,
            output_per_mtok=out,
            cache_read_per_mtok=given_or(
                cache_read_per_mtok, "cache_read_per_mtok", CACHE_READ_MULTIPLIER
            ),
            cache_write_5m_per_mtok=given_or(
                cache_write_5m_per_mtok, "cache_write_5m_per_mtok", CACHE_WRITE_5M_MULTIPLIER
            ),
            cache_write_1h_per_mtok=given_or(
                cache_write_1h_per_mtok, "cache_write_1h_per_mtok", CACHE_WRITE_1H_MULTIPLIER
            ),
            reasoning_per_mtok=(
                out
                if reasoning_per_mtok is None
                else parse_price(reasoning_per_mtok, what="reasoning_per_mtok")
            ),
            batch_discount_pct=(
                DEFAULT_BATCH_DISCOUNT_PCT
                if batch_discount_pct is None
                else parse_pct(batch_discount_pct, what="batch_discount_pct")
            ),
        )

    def scaled(self, ratio: Fraction, *, why: str) -> ModelPrice:
        """Every per-Mtok price multiplied by an exact ratio; the batch discount is unchanged.

        Args:
            ratio: a non-negative exact ratio, e.g. ``Fraction(85, 100)`` for 15% off.
            why: what the scaling is (``"contract discount 15%"``), for error messages.

        Raises:
            InvalidPrice: a scaled price (or its batch-discounted form) is not exact to one
                currency atom per token.
        """
        if ratio < 0:
            raise InvalidPrice(f"{why}: a price cannot be scaled by a negative ratio {ratio}")
        scaled = {
            name: to_decimal(
                Fraction(getattr(self, name)) * ratio, what=f"{name} ({why})", error=InvalidPrice
            )
            for name in PRICE_FIELDS
        }
        try:
            return ModelPrice(batch_discount_pct=self.batch_discount_pct, **scaled)
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
        allowed = {"model", *PRICE_FIELDS, "batch_discount_pct"}
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
            built[model] = ModelPrice.from_spec(
                input_per_mtok=_spec_required(item, "input_per_mtok", model),
                output_per_mtok=_spec_required(item, "output_per_mtok", model),
                cache_read_per_mtok=_spec_value(item, "cache_read_per_mtok", model),
                cache_write_5m_per_mtok=_spec_value(item, "cache_write_5m_per_mtok", model),
                cache_write_1h_per_mtok=_spec_value(item, "cache_write_1h_per_mtok", model),
                reasoning_per_mtok=_spec_value(item, "reasoning_per_mtok", model),
                batch_discount_pct=_spec_value(item, "batch_discount_pct", model),
            )
        return cls(id=id, currency=currency, effective_from=effective_from, prices=built)

    def price_for(self, model: str) -> ModelPrice:
        """This card's price for ``model`` (see :func:`price_for`)."""
        return price_for(self, model)


def _spec_value(item: Mapping[str, object], key: str, model: str) -> DecimalInput | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | Decimal | int):
        raise InvalidPrice(
            f"{key} for {model} must be a decimal string, not {type(value).__name__}",
            model=model,
            field=key,
        )
    return value


def _spec_required(item: Mapping[str, object], key: str, model: str) -> DecimalInput:
    value = _spec_value(item, key, model)
    if value is None:
        raise InvalidCatalog(f"price for {model} lacks {key}", model=model, field=key)
    return value


def card_in_force(cards: Iterable[RateCard], at: datetime) -> RateCard:
    """The card in force at ``at``: the greatest ``effective_from`` that is ``<= at``.

    A card whose ``effective_from`` equals ``at`` is in force at ``at``. Instants compare
    as instants, whatever their UTC offsets.

    Args:
        cards: candidate cards (any order), normally all of one currency.
        at: aware instant, e.g. a usage record's ``occurred_at``.

    Returns:
        The card in force.

    Raises:
        InvalidUsage: ``at`` is naive.
        NoRateInForce: no card has taken effect by ``at`` (or there are no cards).
        InvalidCatalog: two candidate cards share the winning ``effective_from``.
    """
    if not isinstance(at, datetime) or not is_aware(at):
        raise InvalidUsage("the pricing instant must be a timezone-aware datetime")
    best: RateCard | None = None
    tied: RateCard | None = None
    for card in cards:
        if card.effective_from > at:
            continue
        if best is None or card.effective_from > best.effective_from:
            best, tied = card, None
        elif card.effective_from == best.effective_from and card.id != best.id:
            tied = card
    if best is None:
        raise NoRateInForce(f"no rate card is in force at {at.isoformat()}", at=at.isoformat())
    if tied is not None:
        raise InvalidCatalog(
            f"rate cards {best.id} and {tied.id} both take effect at "
            f"{best.effective_from.isoformat()}"
        )
    return best


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
