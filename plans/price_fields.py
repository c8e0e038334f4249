"""The fields of a price and the parsing of given values (pure).

The per-Mtok price fields and their defaults, fee kinds, service and context tiers, and the
checks of decimal strings from the API (at most 6 decimals for a price, 2 for a percentage, 4
for a tier multiplier).

:mod:`plans.prices` builds :class:`~plans.prices.ModelPrice` from these and re-exports the
names its callers use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ledger.units import CURRENCY_ATOM_EXPONENT
from plans._exact import DecimalInput, has_places, parse_decimal, to_decimal
from plans.errors import InvalidCatalog, InvalidPrice

if TYPE_CHECKING:
    from plans.prices import ModelPrice

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
#: Most decimal places a service-tier multiplier may have.
MULTIPLIER_PLACES = 4

#: The per-Mtok price fields of :class:`ModelPrice`, in line order. Input side: every field
#: prices its own tokens (they never overlap); output side: reasoning, audio and image output
#: are parts of the output tokens priced apart.
PRICE_FIELDS: tuple[str, ...] = (
    "input_per_mtok",
    "input_audio_per_mtok",
    "input_image_per_mtok",
    "cache_read_per_mtok",
    "cache_write_5m_per_mtok",
    "cache_write_30m_per_mtok",
    "cache_write_1h_per_mtok",
    "cache_write_12h_per_mtok",
    "output_per_mtok",
    "reasoning_per_mtok",
    "output_audio_per_mtok",
    "output_image_per_mtok",
)
#: Price fields that may be omitted from a spec, and what an omitted one defaults to:
#: ``(field it copies, multiplier)``; resolved in this order, so a default can build on a
#: given or defaulted price before it.
DEFAULTS: tuple[tuple[str, str, Decimal], ...] = (
    ("cache_read_per_mtok", "input_per_mtok", CACHE_READ_MULTIPLIER),
    ("cache_write_5m_per_mtok", "input_per_mtok", CACHE_WRITE_5M_MULTIPLIER),
    ("cache_write_30m_per_mtok", "cache_write_5m_per_mtok", Decimal(1)),
    ("cache_write_1h_per_mtok", "input_per_mtok", CACHE_WRITE_1H_MULTIPLIER),
    ("cache_write_12h_per_mtok", "cache_write_1h_per_mtok", Decimal(1)),
    ("reasoning_per_mtok", "output_per_mtok", Decimal(1)),
    ("input_audio_per_mtok", "input_per_mtok", Decimal(1)),
    ("input_image_per_mtok", "input_per_mtok", Decimal(1)),
    ("output_audio_per_mtok", "output_per_mtok", Decimal(1)),
    ("output_image_per_mtok", "output_per_mtok", Decimal(1)),
)
#: Per-request fees a card may price (a usage record counts each in ``tool_calls``).
FEE_KINDS: tuple[str, ...] = (
    "web_search",
    "web_fetch",
    "code_execution",
    "file_search",
    "tool_call",
)
#: Service tiers a card may price apart from the standard one. A record of ``batch`` without
#: a ``batch`` tier on its card takes the card's batch discount.
SERVICE_TIERS: tuple[str, ...] = ("flex", "priority", "batch", "scale", "fast", "ultrafast")
#: What the providers call the standard tier (priced by the card's own prices).
STANDARD_TIERS = frozenset({"standard", "default", "auto", "on_demand"})

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


def check_exact(value: Decimal, what: str) -> None:
    """Refuse a per-Mtok price finer than one currency atom per token.

    Raises:
        InvalidPrice: more than :data:`EXACT_PRICE_PLACES` decimals.
    """
    if not has_places(Fraction(value), EXACT_PRICE_PLACES):
        raise InvalidPrice(
            f"{what} = {value} is finer than one currency atom per token "
            f"(at most {EXACT_PRICE_PLACES} decimals per Mtok)",
            field=what,
        )


def parse_fees(fees: Mapping[str, object] | None) -> tuple[tuple[str, Decimal], ...]:
    """Given per-request fees ``{kind: price}`` (<= 6 decimals each) as ``(kind, fee)`` pairs.

    The kinds are checked by the price.

    Raises:
        InvalidPrice: a malformed, negative or too precise fee.
    """
    return tuple(
        (
            str(kind),
            parse_decimal(
                fee, what=f"request_fees.{kind}", max_places=GIVEN_PRICE_PLACES, error=InvalidPrice
            ),
        )
        for kind, fee in (fees or {}).items()
    )


def checked_fees(
    request_fees: Iterable[tuple[str, Decimal]],
) -> tuple[tuple[str, Decimal], ...]:
    """A price's per-request fees, checked and sorted by kind.

    Raises:
        InvalidCatalog: an unknown kind, or a kind given twice.
        InvalidPrice: a fee that is not a non-negative ``Decimal`` or is finer than one atom.
    """
    fees = tuple(request_fees)
    seen: set[str] = set()
    for kind, fee in fees:
        if kind not in FEE_KINDS:
            raise InvalidCatalog(
                f"unknown request fee {kind!r}; known: {', '.join(FEE_KINDS)}",
                field="request_fees",
            )
        if kind in seen:
            raise InvalidCatalog(f"request fee {kind} given twice", field="request_fees")
        seen.add(kind)
        if not isinstance(fee, Decimal) or not fee.is_finite() or fee < 0:
            raise InvalidPrice(
                f"request_fees.{kind} must be a non-negative Decimal", field="request_fees"
            )
        # a fee is money per request: whole atoms (10**-18)
        if not has_places(Fraction(fee), EXACT_PRICE_PLACES + 6):
            raise InvalidPrice(
                f"request_fees.{kind} = {fee} is finer than one currency atom",
                field="request_fees",
            )
    return tuple(sorted(fees))


def parse_multiplier(spec: Mapping[str, object], name: object) -> Decimal:
    """A multiplier tier's ``{"multiplier": "0.5"}`` (nothing else, <= 4 decimals).

    Raises:
        InvalidCatalog: other fields beside the multiplier.
        InvalidPrice: a malformed multiplier.
    """
    if set(spec) != {"multiplier"}:
        raise InvalidCatalog(
            f"service_tiers.{name}: a multiplier tier has no prices", field="service_tiers"
        )
    return parse_decimal(
        spec["multiplier"],
        what=f"service_tiers.{name}.multiplier",
        max_places=MULTIPLIER_PLACES,
        error=InvalidPrice,
    )


@dataclass(frozen=True, slots=True)
class ServiceTier:
    """How a model is priced in a service tier.

    A multiplier of the standard prices (of the context band the request falls in) or a price
    of its own (exactly one of the two). Per-request fees are never multiplied.
    """

    name: str
    multiplier: Decimal | None = None
    price: ModelPrice | None = None

    def __post_init__(self) -> None:
        """Check the tier's name and its multiplier or own prices."""
        if self.name not in SERVICE_TIERS:
            raise InvalidCatalog(
                f"unknown service tier {self.name!r}; known: {', '.join(SERVICE_TIERS)}",
                field="service_tiers",
            )
        if (self.multiplier is None) == (self.price is None):
            raise InvalidCatalog(
                f"service tier {self.name} needs a multiplier or its own prices, not both",
                field="service_tiers",
            )
        if self.multiplier is not None:
            m = self.multiplier
            if not isinstance(m, Decimal) or not m.is_finite() or m <= 0:
                raise InvalidPrice(
                    f"service_tiers.{self.name}.multiplier must be a positive decimal",
                    field="service_tiers",
                )
            if not has_places(Fraction(m), MULTIPLIER_PLACES):
                raise InvalidPrice(
                    f"service_tiers.{self.name}.multiplier has more than {MULTIPLIER_PLACES}"
                    f" decimals: {m}",
                    field="service_tiers",
                )
        if self.price is not None and self.price.service_tiers:
            raise InvalidCatalog(
                f"service tier {self.name}'s own prices cannot have service tiers",
                field="service_tiers",
            )


@dataclass(frozen=True, slots=True)
class ContextTier:
    """Prices for a whole request whose prompt is larger than ``above_input_tokens``.

    The prompt is every input token: uncached, cached, written to the cache.
    """

    above_input_tokens: int
    price: ModelPrice

    def __post_init__(self) -> None:
        """Check the threshold, and that the tier's prices have no tiers of their own."""
        n = self.above_input_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise InvalidCatalog(
                f"context_tiers: above_input_tokens must be a positive integer, got {n!r}",
                field="context_tiers",
            )
        if self.price.context_tiers or self.price.service_tiers:
            raise InvalidCatalog(
                "a context tier's prices cannot have tiers of their own", field="context_tiers"
            )


def plain(value: Decimal | None) -> str:
    """A decimal as a plain string without padding zeros (``"0"`` for zero)."""
    assert value is not None
    return format(value.normalize(), "f") if value else "0"


def token_spec(price: ModelPrice) -> dict[str, object]:
    """A price's token prices as decimal strings, with its context tiers nested."""
    out: dict[str, object] = {name: plain(getattr(price, name)) for name in PRICE_FIELDS}
    if price.context_tiers:
        out["context_tiers"] = [
            {"above_input_tokens": c.above_input_tokens, **token_spec(c.price)}
            for c in price.context_tiers
        ]
    return out


def resolve_defaults(
    input_per_mtok: object, output_per_mtok: object, given: Mapping[str, object], *, what: str
) -> dict[str, Any]:
    """Given prices parsed (<= 6 decimals), omitted ones defaulted (:data:`DEFAULTS`)."""
    prefix = f"{what}." if what else ""
    out = {
        "input_per_mtok": parse_price(input_per_mtok, what=f"{prefix}input_per_mtok"),
        "output_per_mtok": parse_price(output_per_mtok, what=f"{prefix}output_per_mtok"),
    }
    for name, source, multiplier in DEFAULTS:
        value = given.get(name)
        if value is not None:
            out[name] = parse_price(value, what=f"{prefix}{name}")
        else:
            out[name] = to_decimal(
                Fraction(out[source]) * Fraction(multiplier), what=name, error=InvalidPrice
            )
    return out


def only_prices(item: Mapping[str, object], what: str, *, extra: set[str]) -> dict[str, Any]:
    """The optional price fields of a tier's spec (besides input and output).

    Raises:
        InvalidCatalog: fields other than the prices and ``extra``.
        InvalidPrice: a price that is not a decimal string.
    """
    unknown = sorted(set(item) - set(PRICE_FIELDS) - extra)
    if unknown:
        raise InvalidCatalog(
            f"{what}: unknown fields {unknown}; allowed: the price fields and {sorted(extra)}",
            field=what,
        )
    out: dict[str, Any] = {}
    for name in PRICE_FIELDS:
        if name in ("input_per_mtok", "output_per_mtok"):
            continue
        value = item.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, str | Decimal | int)
        ):
            raise InvalidPrice(f"{what}.{name} must be a decimal string", field=what)
        out[name] = value
    return out


def required_value(item: Mapping[str, object], key: str, what: str) -> DecimalInput:
    """A tier spec's required price ``key``.

    Raises:
        InvalidCatalog: it is missing.
        InvalidPrice: it is not a decimal string.
    """
    value = item.get(key)
    if value is None:
        raise InvalidCatalog(f"{what} lacks {key}", field=what)
    if isinstance(value, bool) or not isinstance(value, str | Decimal | int):
        raise InvalidPrice(f"{what}.{key} must be a decimal string", field=what)
    return value


def context_threshold(item: Mapping[str, object]) -> int:
    """A context tier's ``above_input_tokens``.

    Raises:
        InvalidCatalog: not a positive integer.
    """
    n = item.get("above_input_tokens")
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise InvalidCatalog(
            f"context_tiers: above_input_tokens must be a positive integer, got {n!r}",
            field="context_tiers",
        )
    return n


def list_of_objects(value: object, what: str) -> list[Mapping[str, object]] | None:
    """A service tier's ``context_tiers``: a list of objects, or ``None``.

    Raises:
        InvalidCatalog: anything else.
    """
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise InvalidCatalog(f"{what}.context_tiers must be a list of objects", field=what)
    return value


#: Keys of a price item besides the per-Mtok prices.
PRICE_EXTRAS = ("batch_discount_pct", "request_fees", "service_tiers", "context_tiers")


def spec_value(item: Mapping[str, object], key: str, model: str) -> DecimalInput | None:
    """A rate-card price item's decimal ``key`` for ``model``, or ``None`` when omitted.

    Raises:
        InvalidPrice: not a decimal string (a float, a bool, ...).
    """
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


def spec_required(item: Mapping[str, object], key: str, model: str) -> DecimalInput:
    """A rate-card price item's required decimal ``key`` for ``model``.

    Raises:
        InvalidCatalog: it is missing.
        InvalidPrice: not a decimal string.
    """
    value = spec_value(item, key, model)
    if value is None:
        raise InvalidCatalog(f"price for {model} lacks {key}", model=model, field=key)
    return value
