"""Applying the failed-request policy to a rated record (pure; no database).

Rating itself is :func:`plans.rating.rate_tokens` (the one rater); :func:`apply_policy` turns
the rated amount into what is billed and what is credited, with a reason code.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from ledger.errors import DomainError
from plans.prices import FEE_KINDS, PRICE_FIELDS, SERVICE_TIERS, ModelPrice
from plans.rating import ATOMS_PER_MTOK_UNIT, ATOMS_PER_UNIT, Rating, Tokens, rate_tokens
from wallet.normalize import failure_kind

if TYPE_CHECKING:
    from plans.catalog import FailedRequestPolicy

__all__ = [
    "Billing",
    "apply_policy",
    "max_atoms_per_token",
    "rate_atoms",
    "wholesale_ratio",
]


def rate_atoms(
    tokens: Tokens, price: ModelPrice, *, batch: bool = False, tier: str | None = None
) -> tuple[int, int]:
    """Total atoms and atoms of the output components of one record.

    See :func:`plans.rating.rate_tokens`.
    """
    r = rate_tokens(tokens, price, tier=tier, batch=batch)
    return r.total, r.output


def _flat_prices(price: ModelPrice) -> list[ModelPrice]:
    """Every flat price a request can be rated at: each tier, each context tier."""
    out: list[ModelPrice] = []
    for tier in (None, *SERVICE_TIERS):
        t = price.tier(tier) if tier else None
        if tier and t is None:
            continue
        base = t.price if t is not None and t.price is not None else price
        for band in (base, *(c.price for c in base.context_tiers)):
            if t is not None and t.multiplier is not None:
                band = band.multiplied(t.multiplier, why=f"service tier {tier}")
            out.append(band)
    return out


def max_atoms_per_token(price: ModelPrice) -> Fraction:
    """The most one token of any component can cost, in atoms, over every tier and context tier.

    Exact.
    """
    return max(
        Fraction(getattr(p, name)) * ATOMS_PER_MTOK_UNIT
        for p in _flat_prices(price)
        for name in PRICE_FIELDS
    )


def _ratio_points(retail: ModelPrice, wholesale: ModelPrice) -> list[tuple[str | None, int]]:
    """(tier, prompt size) pairs at which both prices are flat and comparable."""
    sizes = {0}
    for p in (retail, wholesale):
        for tier in (None, *SERVICE_TIERS):
            t = p.tier(tier) if tier else None
            base = t.price if t is not None and t.price is not None else p
            sizes.update(c.above_input_tokens + 1 for c in base.context_tiers)
    tiers: list[str | None] = [None, "batch"]
    tiers += [t.name for t in (*retail.service_tiers, *wholesale.service_tiers)]
    return [(t, s) for t in dict.fromkeys(tiers) for s in sorted(sizes)]


def _keep(price: ModelPrice, tier: str | None) -> Fraction:
    """What a batch request without a ``batch`` tier keeps of the token prices."""
    if tier == "batch" and price.tier("batch") is None:
        return Fraction(100 - Fraction(price.batch_discount_pct), 100)
    return Fraction(1)


def wholesale_ratio(retail: ModelPrice, wholesale: ModelPrice) -> Fraction:
    """An upper bound of wholesale cost over retail charge for any mix of tokens of a model.

    The largest ratio of a component priced at retail, in every tier and context tier, fees included
    (components free at retail cost the reseller nothing more here; their wholesale is charged when
    captured).
    """
    ratios: list[Fraction] = []
    for tier, size in _ratio_points(retail, wholesale):
        probe = Tokens(input_tokens=size)
        try:
            r = rate_tokens(probe, retail, tier=tier)
            w = rate_tokens(probe, wholesale, tier=tier)
        except DomainError:  # a tier one side does not price: such records are refused
            continue
        rk, wk = _keep(retail, tier), _keep(wholesale, tier)
        for name in PRICE_FIELDS:
            rp = Fraction(getattr(r.price, name)) * rk
            wp = Fraction(getattr(w.price, name)) * wk
            if rp > 0:
                ratios.append(wp / rp)
    rf, wf = dict(retail.request_fees), dict(wholesale.request_fees)
    for kind in FEE_KINDS:
        if rf.get(kind):
            ratios.append(Fraction(wf.get(kind, 0)) / Fraction(rf[kind]))
    return max(ratios, default=Fraction(0))


# not frozen: a frozen dataclass's __init__ costs ~2 us more a record on the gateway path
# (bench/README.md); treat it as immutable
@dataclass(slots=True)
class Billing:
    """Rated, billed and credited atoms of one record, with its reason code and rating."""

    rated: int
    billed: int
    credited: int
    billable_tokens: int
    failure: str | None
    reason: str | None
    rating: Rating | None = None


def apply_policy(
    tokens: Tokens,
    rated: int,
    output_atoms: int,
    policy: FailedRequestPolicy,
    *,
    http_status: int = 200,
    finish_reason: str | None = None,
    truncated: bool = False,
    rating: Rating | None = None,
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
        return Billing(rated, 0, rated, 0, kind, f"{kind}:not_billed", rating)
    if rule == "output_not_billed":
        return Billing(
            rated,
            rated - output_atoms,
            output_atoms,
            total_tokens - tokens.output_tokens,
            kind,
            f"{kind}:output_not_billed",
            rating,
        )
    return Billing(rated, rated, 0, total_tokens, kind, f"{kind}:billed" if kind else None, rating)


#: atoms per currency unit (fees), re-exported for callers that format amounts
ATOMS = ATOMS_PER_UNIT
