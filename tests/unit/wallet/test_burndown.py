"""The burn-down used by usage and holds, on in-memory wallet state (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.units import currency
from plans.prices import ModelPrice
from plans.rating import UsageQuantities, rate
from wallet.billing import rate_atoms
from wallet.burn_order import DEFAULT_BURN_ORDER, validate_burn_order
from wallet.burndown import MONEY_SOURCES, Lot, Owner, WalletState, apply_draw, draw
from wallet.normalize import Tokens

USD = currency("USD")
T0 = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)
CENT = 10**16


def lot(i, kind, remaining, days=None, priority=0, models=()):
    return Lot(
        id=i,
        account_id="a",
        kind=kind,
        remaining=remaining,
        reserved=0,
        granted=remaining,
        expires_at=T0 + timedelta(days=days) if days is not None else None,
        priority=priority,
        models=tuple(models),
    )


def wallet(*lots, credit_limit=0, order=None):
    return WalletState(
        account=Owner("a", None, credit_limit),
        unit=USD,
        order=validate_burn_order(order),
        lots=list(lots),
        overage_used=0,
    )


def taken(d):
    return [(lot.id, atoms) for lot, atoms in d.lots]


def test_bonus_before_paid_and_earliest_expiry_first():
    w = wallet(lot(1, "paid", 100), lot(2, "bonus", 10, days=30), lot(3, "bonus", 10, days=5))
    d, left, refusal = draw(w, "m", 25, 1, T0)
    assert (taken(d), left, refusal) == ([(3, 10), (2, 10), (1, 5)], 0, None)


def test_expired_lots_are_skipped_and_a_shortfall_refuses_without_change():
    w = wallet(lot(1, "paid", 5), lot(2, "bonus", 10, days=-1))
    d, left, refusal = draw(w, "m", 10, 1, T0)
    assert (d, left, refusal) == (None, 5, "insufficient_funds")
    assert [x.remaining for x in w.lots] == [5, 10]


def test_custom_order_priority_and_package_scope():
    w = wallet(
        lot(1, "package", 50, days=1, models=("m-a",)),
        lot(2, "package", 50, days=9, priority=5),
        lot(3, "paid", 1000),
        order=["plan", "package", "paid", "bonus", "overage"],
    )
    # 60 tokens worth 600 atoms: the unscoped, higher-priority package pays 50 tokens (and 5/6
    # of the money); the paid lot pays the rest of the money
    d, left, _ = draw(w, "m-b", 600, 60, T0)
    assert taken(d) == [(2, 50), (3, 100)] and d.package_tokens == 50 and left == 0


def test_overage_only_within_the_credit_limit_and_partial_takes_what_it_can():
    w = wallet(lot(1, "paid", 30), credit_limit=50)
    d, _, _ = draw(w, "m", 80, 1, T0)
    assert d is not None and d.money == {"paid": 30, "overage": 50}
    assert draw(w, "m", 81, 1, T0)[0] is None
    d, left, _ = draw(w, "m", 100, 1, T0, partial=True)
    assert d is not None and d.charged == 80 and left == 20


def test_money_sources_skip_packages_and_plan():
    w = wallet(lot(1, "package", 1000), lot(2, "paid", 100))
    d, _, _ = draw(w, "m", 50, 10, T0, sources=MONEY_SOURCES)
    assert taken(d) == [(2, 50)] and d.package_tokens == 0


def test_apply_takes_the_draw_out_of_the_state():
    w = wallet(lot(1, "paid", 100), credit_limit=10)
    d, _, _ = draw(w, "m", 105, 1, T0)
    apply_draw(w, d, T0)
    assert (w.lots[0].remaining, w.overage_used, w.headroom) == (0, 5, 5)
    assert dict(w.debits) == {"paid": 100, "overage": 5}


def test_default_order():
    assert DEFAULT_BURN_ORDER == ("plan", "package", "bonus", "paid", "overage")


prices = st.decimals(min_value=0, max_value=100, places=6).map(str)
counts = st.integers(min_value=0, max_value=10**8)


@settings(max_examples=300, deadline=None)
@given(
    inp=prices,
    out=prices,
    pct=st.integers(min_value=0, max_value=100),
    tokens=st.tuples(counts, counts, counts, counts, counts, counts),
    batch=st.booleans(),
)
def test_the_rater_matches_a_fraction_oracle(inp, out, pct, tokens, batch):
    """The one rater (integer atoms) against the textbook formula in exact fractions."""
    price = ModelPrice.from_spec(input_per_mtok=inp, output_per_mtok=out, batch_discount_pct=pct)
    i, o, cr, w5, w1, r = tokens
    r = min(r, o)
    counts = {
        "input_tokens": i,
        "output_tokens": o,
        "cache_read_tokens": cr,
        "cache_write_5m_tokens": w5,
        "cache_write_1h_tokens": w1,
        "reasoning_tokens": r,
    }
    total, output_part = rate_atoms(Tokens(**counts), price, batch=batch)
    per_token = {
        k: Fraction(getattr(price, f"{k}_per_mtok")) / 10**6
        for k in ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output", "reasoning")
    }
    keep = Fraction(100 - pct, 100) if batch else Fraction(1)
    oracle_out = ((o - r) * per_token["output"] + r * per_token["reasoning"]) * keep
    oracle = (
        i * per_token["input"]
        + cr * per_token["cache_read"]
        + w5 * per_token["cache_write_5m"]
        + w1 * per_token["cache_write_1h"]
    ) * keep + oracle_out
    assert isinstance(total, int) and Fraction(total, 10**18) == oracle
    assert Fraction(output_part, 10**18) == oracle_out
    exact = rate(UsageQuantities(**counts, batch=batch), price, USD)
    assert exact.total.atoms == total
    assert sum(line.amount.atoms for line in exact.lines) == total
