"""Rating: usage quantities x a model price -> an exact charge (pure, no rounding).

:func:`rate` prices each token component at its per-Mtok rate::

    line amount = tokens * price_per_mtok / 1_000_000            (exact Fraction)

and, for a batch request, adds one negative ``batch_discount`` line equal to
``batch_discount_pct`` percent of all the component lines. The
:class:`~plans.prices.ModelPrice` exactness invariant guarantees that every line is a whole
number of currency atoms, so nothing is rounded here; rounding happens only on documents.

Rating is linear: rating two parts of a record and adding the results gives exactly the
rating of the whole record, line by line.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from ledger.amounts import Amount
from ledger.errors import InvalidAmount
from ledger.units import Unit
from plans.errors import InvalidPrice, InvalidUsage
from plans.prices import TOKENS_PER_MTOK, ModelPrice


class Component(StrEnum):
    """A priced component of a usage record (the ``component`` of a :class:`ChargeLine`)."""

    INPUT = "input"
    CACHE_READ = "cache_read"
    CACHE_WRITE_5M = "cache_write_5m"
    CACHE_WRITE_1H = "cache_write_1h"
    OUTPUT = "output"
    REASONING = "reasoning"
    BATCH_DISCOUNT = "batch_discount"


@dataclass(frozen=True, slots=True)
class UsageQuantities:
    """The token counts of one usage record. The counts never overlap.

    Attributes:
        input_tokens: input billed at the input rate (not cache reads or writes).
        output_tokens: all output tokens, reasoning included.
        cache_read_tokens: input tokens read from the prompt cache.
        cache_write_5m_tokens: input tokens written to the 5-minute cache.
        cache_write_1h_tokens: input tokens written to the 1-hour cache.
        reasoning_tokens: the part of ``output_tokens`` priced at the reasoning rate.
        batch: whether the request went through the batch API (batch discount applies).

    Raises:
        InvalidUsage: a count that is not an ``int`` (bools and floats included) or is
            negative, ``reasoning_tokens > output_tokens``, or a non-bool ``batch``.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    batch: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "batch":
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidUsage(
                    f"{f.name} must be an integer, not {type(value).__name__}", field=f.name
                )
            if value < 0:
                raise InvalidUsage(f"{f.name} must not be negative, got {value}", field=f.name)
        if not isinstance(self.batch, bool):
            raise InvalidUsage(
                f"batch must be a boolean, not {type(self.batch).__name__}", field="batch"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise InvalidUsage(
                f"reasoning_tokens ({self.reasoning_tokens}) is part of output_tokens and "
                f"cannot exceed it ({self.output_tokens})",
                field="reasoning_tokens",
            )

    @property
    def total_tokens(self) -> int:
        """All tokens of the record (input, cache reads/writes and output)."""
        return (
            self.input_tokens
            + self.cache_read_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
            + self.output_tokens
        )


@dataclass(frozen=True, slots=True)
class ChargeLine:
    """One line of a charge.

    Attributes:
        component: what the line prices.
        tokens: tokens priced on the line; for ``batch_discount``, all tokens discounted.
        price_per_mtok: the per-Mtok rate; ``None`` on the ``batch_discount`` line, whose
            components have different rates.
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
        lines: the component lines in a fixed order (input, cache_read, cache_write_5m,
            cache_write_1h, output, reasoning, batch_discount); zero-token lines and a zero
            batch discount are omitted.
    """

    total: Amount
    lines: tuple[ChargeLine, ...]

    def line(self, component: Component | str) -> ChargeLine | None:
        """The line for ``component``, or ``None`` when it was omitted."""
        for line in self.lines:
            if line.component == component:
                return line
        return None


def _amount(value: Fraction, unit: Unit) -> Amount:
    try:
        return Amount.from_fraction(value, unit)
    except InvalidAmount as exc:  # cannot happen for a valid ModelPrice; never round
        raise InvalidPrice(f"rating is not exact: {exc.detail}") from None


def rate(usage: UsageQuantities, price: ModelPrice, unit: Unit) -> Charge:
    """Rate one usage record at ``price``, exactly.

    Output tokens that are not reasoning tokens are priced at the output rate; reasoning
    tokens at the reasoning rate. For a batch record the ``batch_discount`` line takes
    ``price.batch_discount_pct`` percent off every token component.

    Args:
        usage: the record's token counts.
        price: the resolved per-Mtok prices (see :func:`plans.pricebook.resolve_price`).
        unit: the currency of ``price``.

    Returns:
        The charge: exact lines and their total, in ``unit``.

    Raises:
        InvalidPrice: ``unit`` is not a currency, or (only for a price built around the
            invariant) a line would be finer than one atom.
    """
    if not isinstance(unit, Unit) or not unit.is_currency:
        raise InvalidPrice(f"usage is rated in a currency, not {unit}")
    parts = (
        (Component.INPUT, usage.input_tokens, price.input_per_mtok),
        (Component.CACHE_READ, usage.cache_read_tokens, price.cache_read_per_mtok),
        (Component.CACHE_WRITE_5M, usage.cache_write_5m_tokens, price.cache_write_5m_per_mtok),
        (Component.CACHE_WRITE_1H, usage.cache_write_1h_tokens, price.cache_write_1h_per_mtok),
        (Component.OUTPUT, usage.output_tokens - usage.reasoning_tokens, price.output_per_mtok),
        (Component.REASONING, usage.reasoning_tokens, price.reasoning_per_mtok),
    )
    lines: list[ChargeLine] = []
    subtotal = Fraction(0)
    discounted_tokens = 0
    for component, tokens, per_mtok in parts:
        if tokens == 0:
            continue
        value = Fraction(tokens) * Fraction(per_mtok) / TOKENS_PER_MTOK
        subtotal += value
        discounted_tokens += tokens
        lines.append(ChargeLine(component, tokens, per_mtok, _amount(value, unit)))
    total = subtotal
    discount = subtotal * Fraction(price.batch_discount_pct) / 100 if usage.batch else Fraction(0)
    if discount:
        total -= discount
        lines.append(
            ChargeLine(
                Component.BATCH_DISCOUNT,
                discounted_tokens,
                None,
                _amount(-discount, unit),
                price.batch_discount_pct,
            )
        )
    return Charge(total=_amount(total, unit), lines=tuple(lines))
