"""Rating a usage record exactly and applying the failed-request policy (pure; no database).

:func:`rate_atoms` is the hot path's integer fast path of :func:`plans.rating.rate` (a property
test ties the two); :func:`apply_policy` turns the rated amount into what is billed and what is
credited, with a reason code.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING

from plans.errors import InvalidUsage
from plans.prices import ModelPrice
from wallet.normalize import Tokens, failure_kind

if TYPE_CHECKING:
    from plans.catalog import FailedRequestPolicy

#: Atoms of a currency unit per token, from a price per million tokens: 10**18 / 10**6.
_ATOMS_PER_MTOK_UNIT = 10**12


def _per_mtok(price: ModelPrice) -> tuple[Decimal, ...]:
    return (
        price.input_per_mtok,
        price.cache_read_per_mtok,
        price.cache_write_5m_per_mtok,
        price.cache_write_1h_per_mtok,
        price.output_per_mtok,
        price.reasoning_per_mtok,
    )


@lru_cache(maxsize=4096)
def _atoms_per_token(price: ModelPrice) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Per-token atoms of each component, full and batch-discounted; None if not integral."""
    full, batch = [], []
    keep = Fraction(100 - Fraction(price.batch_discount_pct), 100)
    for p in _per_mtok(price):
        atoms = Fraction(p) * _ATOMS_PER_MTOK_UNIT
        discounted = atoms * keep
        if atoms.denominator != 1 or discounted.denominator != 1:
            return None
        full.append(atoms.numerator)
        batch.append(discounted.numerator)
    return tuple(full), tuple(batch)


def _counts(t: Tokens) -> tuple[int, ...]:
    return (
        t.input_tokens,
        t.cache_read_tokens,
        t.cache_write_5m_tokens,
        t.cache_write_1h_tokens,
        t.output_tokens - t.reasoning_tokens,
        t.reasoning_tokens,
    )


def rate_atoms(tokens: Tokens, price: ModelPrice, *, batch: bool) -> tuple[int, int]:
    """(total atoms, atoms of the output and reasoning components) of one record, exactly.

    Integer arithmetic on per-token atom prices; a price whose per-token atoms are not whole
    (the catalog refuses those) falls back to exact fractions.

    Raises:
        InvalidUsage: the price cannot rate the record exactly.
    """
    counts = _counts(tokens)
    table = _atoms_per_token(price)
    if table is None:
        keep = Fraction(100 - Fraction(price.batch_discount_pct), 100) if batch else Fraction(1)
        parts = [
            Fraction(p) * _ATOMS_PER_MTOK_UNIT * keep * c
            for p, c in zip(_per_mtok(price), counts, strict=True)
        ]
        exact_total, exact_output = sum(parts, Fraction(0)), parts[4] + parts[5]
        if exact_total.denominator != 1 or exact_output.denominator != 1:
            raise InvalidUsage("this price cannot rate the record exactly; fix the rate card")
        return exact_total.numerator, exact_output.numerator
    per_token = table[1] if batch else table[0]
    total: int = sum(c * a for c, a in zip(counts, per_token, strict=True))
    output: int = counts[4] * per_token[4] + counts[5] * per_token[5]
    return total, output


def max_atoms_per_token(price: ModelPrice) -> Fraction:
    """The most one token of any component can cost, in atoms (exact)."""
    return max(Fraction(p) * _ATOMS_PER_MTOK_UNIT for p in _per_mtok(price))


def wholesale_ratio(retail: ModelPrice, wholesale: ModelPrice) -> Fraction:
    """An upper bound of wholesale cost over retail charge for any mix of tokens of a model:
    the largest ratio of a component priced at retail (components free at retail cost the
    reseller nothing more here; their wholesale is charged when captured)."""
    ratios = [
        Fraction(w) / Fraction(r)
        for r, w in zip(_per_mtok(retail), _per_mtok(wholesale), strict=True)
        if Fraction(r) > 0
    ]
    return max(ratios, default=Fraction(0))


@dataclass(frozen=True, slots=True)
class Billing:
    """Rated, billed and credited atoms of one record, with its reason code."""

    rated: int
    billed: int
    credited: int
    billable_tokens: int
    failure: str | None
    reason: str | None


def apply_policy(
    tokens: Tokens,
    rated: int,
    output_atoms: int,
    policy: FailedRequestPolicy,
    *,
    http_status: int = 200,
    finish_reason: str | None = None,
    truncated: bool = False,
) -> Billing:
    """Apply the failed-request policy: billed, not billed, or output not billed."""
    kind = failure_kind(
        http_status=http_status,
        finish_reason=finish_reason,
        truncated=truncated,
        output_tokens=tokens.output_tokens,
    )
    rule = policy.rules.get(kind, "billed") if kind else "billed"
    total_tokens = tokens.total
    if rule == "not_billed":
        return Billing(rated, 0, rated, 0, kind, f"{kind}:not_billed")
    if rule == "output_not_billed":
        return Billing(
            rated,
            rated - output_atoms,
            output_atoms,
            total_tokens - tokens.output_tokens,
            kind,
            f"{kind}:output_not_billed",
        )
    return Billing(rated, rated, 0, total_tokens, kind, f"{kind}:billed" if kind else None)
