"""The bonus a top-up earns under a rule (pure, no database)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from ledger.amounts import Amount
from ledger.units import currency
from plans.bonuses import BonusGrant, BonusRule, BonusTier, bonus_earned

USD = currency("USD")
JAN = datetime(2026, 1, 1, tzinfo=UTC)


def usd(value: str) -> Amount:
    return Amount.parse(value, USD)


def rule(*tiers: BonusTier) -> BonusRule:
    return BonusRule("br_1", USD, None, JAN, tiers, JAN)


TEN_PCT_FROM_50 = BonusTier(usd("50"), Decimal(10), None, 30)
FIXED_25_FROM_200 = BonusTier(usd("200"), None, usd("25"), None)


def test_a_top_up_below_every_tier_earns_nothing() -> None:
    assert bonus_earned(rule(TEN_PCT_FROM_50), usd("49.99")) is None
    assert bonus_earned(rule(), usd("1000")) is None


def test_the_boundary_amount_reaches_its_tier_and_a_pct_bonus_is_exact() -> None:
    assert bonus_earned(rule(TEN_PCT_FROM_50), usd("50")) == BonusGrant("br_1", usd("5"), 30)
    assert bonus_earned(rule(TEN_PCT_FROM_50), usd("123.45")) == BonusGrant(
        "br_1", usd("12.345"), 30
    )


def test_the_highest_tier_reached_applies() -> None:
    tiers = rule(TEN_PCT_FROM_50, FIXED_25_FROM_200)
    assert bonus_earned(tiers, usd("199.99")) == BonusGrant("br_1", usd("19.999"), 30)
    assert bonus_earned(tiers, usd("500")) == BonusGrant("br_1", usd("25"), None)


@given(
    atoms=st.integers(min_value=0, max_value=10**24),
    pct=st.decimals(min_value=0, max_value=100, places=2),
)
def test_a_pct_bonus_is_the_exact_share_floored_to_the_atom(atoms: int, pct: Decimal) -> None:
    grant = bonus_earned(rule(BonusTier(Amount(0, USD), pct, None, None)), Amount(atoms, USD))
    assert grant is not None
    exact = Fraction(atoms) * Fraction(pct) / 100
    assert grant.amount.atoms <= exact < grant.amount.atoms + 1
    assert grant.amount.unit == USD
