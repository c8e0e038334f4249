"""Top-up bonus rules as values, and the bonus a top-up earns (pure).

A rule version holds tiers by increasing ``min_amount``; the highest tier a top-up reaches
applies: a percentage of the top-up (exact, floored to the atom) or a fixed amount.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from ledger.amounts import Amount
from ledger.units import Unit


@dataclass(frozen=True, slots=True)
class BonusTier:
    """A tier of a bonus rule, from ``min_amount`` on.

    It grants ``bonus_pct`` percent of the top-up, or a fixed ``bonus_amount`` (exactly one is
    set); the bonus lot expires after ``bonus_expires_days`` (``None``: never).
    """

    min_amount: Amount
    bonus_pct: Decimal | None
    bonus_amount: Amount | None
    bonus_expires_days: int | None


@dataclass(frozen=True, slots=True)
class BonusRule:
    """A bonus rule version for (currency, owner); tiers by increasing ``min_amount``.

    ``owner_account_id`` ``None`` is the operator's rule; otherwise a reseller's rule for its
    sub-accounts. An empty ``tiers`` ends bonuses from ``effective_from`` on.
    """

    id: str
    currency: Unit
    owner_account_id: str | None
    effective_from: datetime
    tiers: tuple[BonusTier, ...]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BonusGrant:
    """The bonus a top-up earns.

    ``amount`` under rule ``rule_id``, expiring after ``expires_days`` (``None``: never).
    """

    rule_id: str
    amount: Amount
    expires_days: int | None


def bonus_earned(rule: BonusRule, amount: Amount) -> BonusGrant | None:
    """The bonus a top-up of ``amount`` earns under ``rule``.

    The highest tier whose ``min_amount <= amount`` applies (a top-up of exactly
    ``min_amount`` reaches the tier). A percentage bonus is ``amount * pct / 100`` exactly
    (floored to the atom only for an amount finer than 10**-14 of the unit, which top-ups
    never are); a fixed bonus is the tier's ``bonus_amount``.

    Returns:
        The grant, or ``None`` when no tier is reached.
    """
    reached = [t for t in rule.tiers if t.min_amount <= amount]
    if not reached:
        return None
    tier = reached[-1]
    if tier.bonus_amount is not None:
        bonus = tier.bonus_amount
    else:
        assert tier.bonus_pct is not None
        exact = Fraction(amount.atoms) * Fraction(tier.bonus_pct) / 100
        bonus = Amount(exact.numerator // exact.denominator, amount.unit)
    return BonusGrant(rule.id, bonus, tier.bonus_expires_days)
