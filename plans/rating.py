"""Rating: usage quantities x a model price -> an exact charge (pure, no rounding).

This is the one rater. :func:`rate_tokens` prices each component of a record at its per-Mtok
rate, in integer currency atoms::

    component atoms = tokens * (price_per_mtok * 10**12)         (atoms of 10**-18 per token)

after choosing the prices that apply to the request:

1. the **service tier** (``flex``, ``priority``, ``batch``, ...): the tier's own prices, or the
   standard ones times its multiplier; a tier the price does not define is refused
   (:class:`UnpricedServiceTier`), except ``batch``, which then takes the price's batch
   discount (one negative ``batch_discount`` amount of ``batch_discount_pct`` percent of the
   token components);
2. the **context tier**: a prompt (every input token, cached and written ones included) larger
   than a tier's ``above_input_tokens`` is priced, whole, at that tier's prices;
3. **per-request fees** (web search, code execution, ...) times the record's counts; fees are
   never multiplied by a tier nor batch-discounted.

The :class:`~plans.prices.ModelPrice` exactness invariant guarantees that one token of every
component, in every tier and context tier, batch-discounted or not, is a whole number of atoms,
so nothing is rounded here. The per-token atoms of a price are computed once and kept on it.

:func:`rate` is the same rating presented as :class:`Charge` lines with :class:`Amount` s.
Rating is linear within a context tier: rating the parts of a record and adding them gives the
rating of the whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from ledger.amounts import Amount
from ledger.units import Unit
from plans.errors import InvalidPrice, InvalidUsage
from plans.prices import FEE_KINDS, PRICE_FIELDS, STANDARD_TIERS, ModelPrice

#: Atoms of a currency unit per token, from a price per million tokens: 10**18 / 10**6.
ATOMS_PER_MTOK_UNIT = 10**12
#: Atoms of a currency unit per unit: fees are money per request.
ATOMS_PER_UNIT = 10**18


class Component(StrEnum):
    """A priced component of a usage record (the ``component`` of a :class:`ChargeLine`)."""

    INPUT = "input"
    INPUT_AUDIO = "input_audio"
    INPUT_IMAGE = "input_image"
    CACHE_READ = "cache_read"
    CACHE_WRITE_5M = "cache_write_5m"
    CACHE_WRITE_30M = "cache_write_30m"
    CACHE_WRITE_1H = "cache_write_1h"
    CACHE_WRITE_12H = "cache_write_12h"
    OUTPUT = "output"
    REASONING = "reasoning"
    OUTPUT_AUDIO = "output_audio"
    OUTPUT_IMAGE = "output_image"
    WEB_SEARCH = "web_search"
    WEB_FETCH = "web_fetch"
    CODE_EXECUTION = "code_execution"
    FILE_SEARCH = "file_search"
    TOOL_CALL = "tool_call"
    BATCH_DISCOUNT = "batch_discount"


#: The token components, in line order (aligned with :data:`plans.prices.PRICE_FIELDS`).
TOKEN_COMPONENTS: tuple[Component, ...] = (
    Component.INPUT,
    Component.INPUT_AUDIO,
    Component.INPUT_IMAGE,
    Component.CACHE_READ,
    Component.CACHE_WRITE_5M,
    Component.CACHE_WRITE_30M,
    Component.CACHE_WRITE_1H,
    Component.CACHE_WRITE_12H,
    Component.OUTPUT,
    Component.REASONING,
    Component.OUTPUT_AUDIO,
    Component.OUTPUT_IMAGE,
)
assert tuple(c.value + "_per_mtok" for c in TOKEN_COMPONENTS) == PRICE_FIELDS
#: Index of the first output component in :data:`TOKEN_COMPONENTS`.
_FIRST_OUTPUT = 8

#: The token count fields of :class:`Tokens`, in line order.
TOKEN_FIELDS: tuple[str, ...] = (
    "input_tokens",
    "input_audio_tokens",
    "input_image_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_30m_tokens",
    "cache_write_1h_tokens",
    "cache_write_12h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "output_audio_tokens",
    "output_image_tokens",
)


class UnpricedServiceTier(InvalidUsage):
    """The record names a service tier its price does not define.

    It is not charged at the standard price by mistake.
    """

    code = "unpriced_service_tier"


# not frozen: a frozen dataclass's __init__ costs ~2 us more a record on the gateway path
# (bench/README.md); treat it as immutable
@dataclass(slots=True)
class Tokens:
    """The token counts of one request, and its per-request tool calls.

    Input side: the counts never overlap (``input_tokens`` is uncached text and other input;
    audio and image input, cache reads and cache writes per lifetime are counted apart).
    Output side: ``output_tokens`` is every output token; reasoning, audio and image output
    are parts of it that a price may rate apart.

    Attributes:
        tool_calls: ``(kind, count)`` pairs of per-request fees (kinds in
            :data:`plans.prices.FEE_KINDS`), sorted by kind.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_30m_tokens: int = 0
    cache_write_12h_tokens: int = 0
    input_audio_tokens: int = 0
    input_image_tokens: int = 0
    output_audio_tokens: int = 0
    output_image_tokens: int = 0
    tool_calls: tuple[tuple[str, int], ...] = ()

    @property
    def prompt_tokens(self) -> int:
        """Every input token: what context tiers are measured on."""
        return (
            self.input_tokens
            + self.input_audio_tokens
            + self.input_image_tokens
            + self.cache_read_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_30m_tokens
            + self.cache_write_1h_tokens
            + self.cache_write_12h_tokens
        )

    @property
    def total(self) -> int:
        """Every token counted once."""
        return self.prompt_tokens + self.output_tokens

    @property
    def total_tokens(self) -> int:
        """Every token counted once (same as :attr:`total`)."""
        return self.total

    @property
    def cache_write_tokens(self) -> int:
        """Tokens written to the cache, every lifetime."""
        return (
            self.cache_write_5m_tokens
            + self.cache_write_30m_tokens
            + self.cache_write_1h_tokens
            + self.cache_write_12h_tokens
        )

    def counts(self) -> tuple[int, ...]:
        """Tokens per component of :data:`TOKEN_COMPONENTS`.

        Output: the part that is not reasoning, audio or image.
        """
        return (
            self.input_tokens,
            self.input_audio_tokens,
            self.input_image_tokens,
            self.cache_read_tokens,
            self.cache_write_5m_tokens,
            self.cache_write_30m_tokens,
            self.cache_write_1h_tokens,
            self.cache_write_12h_tokens,
            self.output_tokens
            - self.reasoning_tokens
            - self.output_audio_tokens
            - self.output_image_tokens,
            self.reasoning_tokens,
            self.output_audio_tokens,
            self.output_image_tokens,
        )

    def check(self, where: str = "usage") -> Tokens:
        """Validate the counts; returns ``self``.

        Raises:
            InvalidUsage: a count that is not a non-negative ``int``, parts of the output that
                exceed it, or an unknown tool-call kind.
        """
        for name in TOKEN_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidUsage(
                    f"{where}: {name} must be an integer, not {type(value).__name__}", field=name
                )
            if value < 0:
                raise InvalidUsage(f"{where}: {name} must not be negative, got {value}", field=name)
        parts = self.reasoning_tokens + self.output_audio_tokens + self.output_image_tokens
        if parts > self.output_tokens:
            raise InvalidUsage(
                f"{where}: reasoning, audio and image output ({parts}) are parts of the output"
                f" tokens and cannot exceed them ({self.output_tokens})",
                field="reasoning_tokens",
            )
        for kind, count in self.tool_calls:
            if kind not in FEE_KINDS:
                raise InvalidUsage(
                    f"{where}: unknown tool call kind {kind!r}; known: {', '.join(FEE_KINDS)}",
                    field="tool_calls",
                )
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise InvalidUsage(
                    f"{where}: tool_calls.{kind} must be a non-negative integer", field="tool_calls"
                )
        return self


@dataclass(slots=True)
class Rating:
    """What one record costs, in integer atoms of the price's currency.

    Attributes:
        total: everything, after the batch discount, fees included.
        output: the output components (output, reasoning, audio and image output) after the
            batch discount (what ``output_not_billed`` credits).
        parts: atoms per token component of :data:`TOKEN_COMPONENTS`, before the discount.
        fees: atoms per fee kind of :data:`plans.prices.FEE_KINDS`.
        discount: atoms the batch discount took off (0 when none).
        tier: the service tier that priced the record (``None``: standard).
        above_input_tokens: the context tier that priced it (``None``: the base prices).
        price: the flat per-Mtok prices the tokens were rated at (tier and context applied).
    """

    total: int
    output: int
    parts: tuple[int, ...]
    fees: tuple[int, ...]
    discount: int
    tier: str | None
    above_input_tokens: int | None
    price: ModelPrice


@dataclass(frozen=True, slots=True)
class _Band:
    above: int | None
    price: ModelPrice
    full: tuple[int, ...]
    batch: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _TierTable:
    bands: tuple[_Band, ...]  # base first, then ascending thresholds
    fees: tuple[int, ...]
    discount_pct: Decimal | None  # the batch discount, for a batch record without a batch tier


def _per_token(price: ModelPrice) -> tuple[tuple[int, ...], tuple[int, ...]]:
    keep = Fraction(100 - Fraction(price.batch_discount_pct), 100)
    full, batch = [], []
    for name in PRICE_FIELDS:
        atoms = Fraction(getattr(price, name)) * ATOMS_PER_MTOK_UNIT
        discounted = atoms * keep
        if atoms.denominator != 1 or discounted.denominator != 1:  # the invariant forbids it
            raise InvalidPrice(f"{name} = {getattr(price, name)} cannot rate exactly")
        full.append(atoms.numerator)
        batch.append(discounted.numerator)
    return tuple(full), tuple(batch)


def _fee_atoms(price: ModelPrice) -> tuple[int, ...]:
    fees = dict(price.request_fees)
    out = []
    for kind in FEE_KINDS:
        atoms = Fraction(fees.get(kind, Decimal(0))) * ATOMS_PER_UNIT
        if atoms.denominator != 1:
            raise InvalidPrice(f"request_fees.{kind} cannot rate exactly")
        out.append(atoms.numerator)
    return tuple(out)


def _bands(price: ModelPrice, multiplier: Decimal | None, why: str) -> tuple[_Band, ...]:
    out = []
    for above, band in (
        (None, price),
        *((c.above_input_tokens, c.price) for c in price.context_tiers),
    ):
        flat = band if multiplier is None else band.multiplied(multiplier, why=why)
        full, batch = _per_token(flat)
        out.append(_Band(above, flat, full, batch))
    return tuple(out)


def _table(price: ModelPrice) -> dict[str | None, _TierTable]:
    """Per-token atoms of every tier and context tier of ``price`` (built once, kept on it)."""
    table = price.rating_table
    if table is not None:
        return table  # type: ignore[return-value]
    fees = _fee_atoms(price)
    built: dict[str | None, _TierTable] = {None: _TierTable(_bands(price, None, ""), fees, None)}
    for tier in price.service_tiers:
        if tier.price is not None:
            built[tier.name] = _TierTable(
                _bands(tier.price, None, ""), _fee_atoms(tier.price), None
            )
        else:
            built[tier.name] = _TierTable(
                _bands(price, tier.multiplier, f"service tier {tier.name}"), fees, None
            )
    if "batch" not in built:
        built["batch"] = _TierTable(built[None].bands, fees, price.batch_discount_pct)
    object.__setattr__(price, "rating_table", built)
    return built


def standard_tier(tier: str | None) -> str | None:
    """A service tier name as the rater keys it: ``None`` for the standard tier."""
    if tier is None or tier in STANDARD_TIERS:
        return None
    return tier


def _tier_table(price: ModelPrice, tier: str | None, batch: bool) -> tuple[str | None, _TierTable]:
    """The service tier a record is rated in (``None``: standard) and its price table."""
    if tier is not None and tier in STANDARD_TIERS:
        tier = None
    if batch:
        if tier not in (None, "batch"):
            raise InvalidUsage(f"a batch request has no service tier {tier!r}")
        tier = "batch"
    tt = _table(price).get(tier)
    if tt is None:
        raise UnpricedServiceTier(
            f"the price in force defines no {tier!r} service tier; add service_tiers.{tier}"
            " to the rate card (or send the record with the tier it was served in)",
            service_tier=tier,
        )
    return tier, tt


def _band_of(tt: _TierTable, tokens: Tokens) -> _Band:
    """The context tier the whole prompt falls in (the highest band it is above)."""
    band = tt.bands[0]
    if len(tt.bands) > 1:
        prompt = tokens.prompt_tokens
        for b in tt.bands[1:]:
            if prompt > b.above:  # type: ignore[operator]
                band = b
    return band


def _component_counts(tokens: Tokens) -> tuple[int, ...]:
    """Tokens per component of :data:`TOKEN_COMPONENTS` (text output net of its parts)."""
    return (
        tokens.input_tokens,
        tokens.input_audio_tokens,
        tokens.input_image_tokens,
        tokens.cache_read_tokens,
        tokens.cache_write_5m_tokens,
        tokens.cache_write_30m_tokens,
        tokens.cache_write_1h_tokens,
        tokens.cache_write_12h_tokens,
        tokens.output_tokens
        - tokens.reasoning_tokens
        - tokens.output_audio_tokens
        - tokens.output_image_tokens,
        tokens.reasoning_tokens,
        tokens.output_audio_tokens,
        tokens.output_image_tokens,
    )


def _fees(tokens: Tokens, tt: _TierTable) -> tuple[int, ...]:
    """Atoms per fee kind of the record's tool calls."""
    if not tokens.tool_calls:
        return _NO_FEES
    calls = dict(tokens.tool_calls)
    return tuple(calls.get(k, 0) * a for k, a in zip(FEE_KINDS, tt.fees, strict=True))


def rate_tokens(
    tokens: Tokens, price: ModelPrice, *, tier: str | None = None, batch: bool = False
) -> Rating:
    """Rate one record exactly (see the module docstring).

    Args:
        tokens: the record's counts (already checked, see :meth:`Tokens.check`).
        price: the resolved price.
        tier: the service tier (``None`` or a standard name: standard prices).
        batch: the record went through a batch API (the ``batch`` tier).

    Raises:
        UnpricedServiceTier: ``tier`` is not defined by ``price`` (and is not ``batch``).
        InvalidUsage: ``batch`` with another tier.
    """
    tier, tt = _tier_table(price, tier, batch)
    band = _band_of(tt, tokens)
    counts = _component_counts(tokens)
    full = band.full
    parts = (
        counts[0] * full[0],
        counts[1] * full[1],
        counts[2] * full[2],
        counts[3] * full[3],
        counts[4] * full[4],
        counts[5] * full[5],
        counts[6] * full[6],
        counts[7] * full[7],
        counts[8] * full[8],
        counts[9] * full[9],
        counts[10] * full[10],
        counts[11] * full[11],
    )
    subtotal = sum(parts)
    output = parts[8] + parts[9] + parts[10] + parts[11]
    discount = 0
    if tt.discount_pct is not None:
        keep = band.batch
        discount = subtotal - sum(c * a for c, a in zip(counts, keep, strict=True))
        output = sum(counts[i] * keep[i] for i in _OUTPUT_COMPONENTS)
    fee_atoms = _fees(tokens, tt)
    return Rating(
        subtotal - discount + sum(fee_atoms),
        output,
        parts,
        fee_atoms,
        discount,
        tier,
        band.above,
        band.price,
    )


#: indexes of the output components in :func:`_component_counts` (what output_not_billed credits)
_OUTPUT_COMPONENTS = (8, 9, 10, 11)
_NO_FEES = (0,) * len(FEE_KINDS)


# -- the same rating as charge lines -------------------------------------------------------


# not frozen: a frozen dataclass's __init__ costs ~2 us more a record on the gateway path
# (bench/README.md); treat it as immutable
@dataclass(slots=True)
class UsageQuantities(Tokens):
    """:class:`Tokens` checked on construction, with the batch flag (for :func:`rate`).

    Raises:
        InvalidUsage: see :meth:`Tokens.check`, or a non-bool ``batch``.
    """

    batch: bool = False

    def __post_init__(self) -> None:
        """Check the quantities (see the class)."""
        if not isinstance(self.batch, bool):
            raise InvalidUsage(
                f"batch must be a boolean, not {type(self.batch).__name__}", field="batch"
            )
        for f in fields(Tokens):
            if f.name != "tool_calls" and isinstance(getattr(self, f.name), bool):
                raise InvalidUsage(f"{f.name} must be an integer, not bool", field=f.name)
        self.check()


@dataclass(frozen=True, slots=True)
class ChargeLine:
    """One line of a charge.

    Attributes:
        component: what the line prices.
        tokens: tokens priced on the line (requests, for a fee); for ``batch_discount``, all
            tokens discounted.
        price_per_mtok: the per-Mtok rate (the fee per request, for a fee); ``None`` on the
            ``batch_discount`` line, whose components have different rates.
        amount: the exact amount (negative on the ``batch_discount`` line).
        discount_pct: the batch discount percentage on the ``batch_discount`` line, else
            ``None``.
    """

    component: Component
    tokens: int
    price_per_mtok: Decimal | None
    amount: Amount
    discount_pct: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Charge:
    """The exact result of rating one usage record.

    Attributes:
        total: the sum of all lines (after the batch discount).
        lines: the component lines in :data:`TOKEN_COMPONENTS` order, then the fees, then the
            batch discount; zero lines are omitted.
        rating: the atoms behind the lines.
    """

    total: Amount
    lines: tuple[ChargeLine, ...]
    rating: Rating | None = field(default=None, compare=False)

    def line(self, component: Component | str) -> ChargeLine | None:
        """The line for ``component``, or ``None`` when it was omitted."""
        for line in self.lines:
            if line.component == component:
                return line
        return None


def charge_lines(tokens: Tokens, rating: Rating, unit: Unit) -> Charge:
    """A rating as lines of :class:`Amount` in ``unit`` (the currency of its price)."""
    lines: list[ChargeLine] = []
    counts = tokens.counts()
    discounted = 0
    for comp, name, n, atoms in zip(
        TOKEN_COMPONENTS, PRICE_FIELDS, counts, rating.parts, strict=True
    ):
        if n:
            discounted += n
            lines.append(ChargeLine(comp, n, getattr(rating.price, name), Amount(atoms, unit)))
    calls = dict(tokens.tool_calls)
    for kind, atoms in zip(FEE_KINDS, rating.fees, strict=True):
        n = calls.get(kind, 0)
        if n:
            per = Decimal(atoms // n) / ATOMS_PER_UNIT if n else Decimal(0)
            lines.append(ChargeLine(Component(kind), n, per, Amount(atoms, unit)))
    if rating.discount:
        lines.append(
            ChargeLine(
                Component.BATCH_DISCOUNT,
                discounted,
                None,
                Amount(-rating.discount, unit),
                rating.price.batch_discount_pct,
            )
        )
    return Charge(total=Amount(rating.total, unit), lines=tuple(lines), rating=rating)


def rate(
    usage: UsageQuantities | Tokens,
    price: ModelPrice,
    unit: Unit,
    *,
    tier: str | None = None,
) -> Charge:
    """Rate one usage record at ``price``, exactly, as charge lines (see :func:`rate_tokens`).

    Args:
        usage: the record's counts (a :class:`UsageQuantities` carries the batch flag).
        price: the resolved per-Mtok prices (see :func:`plans.pricebook.resolve_price`).
        unit: the currency of ``price``.
        tier: the service tier.

    Raises:
        InvalidPrice: ``unit`` is not a currency.
        UnpricedServiceTier: see :func:`rate_tokens`.
    """
    if not isinstance(unit, Unit) or not unit.is_currency:
        raise InvalidPrice(f"usage is rated in a currency, not {unit}")
    batch = bool(getattr(usage, "batch", False))
    return charge_lines(usage, rate_tokens(usage, price, tier=tier, batch=batch), unit)
