"""Invoice line builders: one per line kind, from the rows the close reads."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from invoicing.lines import (
    REVERSAL_DEBT,
    CloseRows,
    CreditGroup,
    PackageRow,
    PlanFeeRow,
    UsageGroup,
    failed_request_credit_line,
    invoice_lines,
    overage_line,
    package_line,
    plan_fee_line,
    prepaid_usage_line,
    reversal_debt_line,
)
from invoicing.periods import Period
from ledger.amounts import Amount
from ledger.units import currency

USD = currency("USD")
NOV = Period(2026, 11)


def usd(v: str) -> Amount:
    return Amount.parse(v, USD)


def usage(**kw: object) -> UsageGroup:
    base: dict[str, object] = dict(
        late_from=None,
        via_sub=False,
        model="m1",
        overage_requests=0,
        overage_tokens=0,
        overage=0,
        prepaid_requests=0,
        shared_requests=0,
        prepaid_tokens=0,
        bonus=0,
        paid=0,
        package_tokens=0,
        plan_requests=0,
        prepaid_records=0,
    )
    return UsageGroup(**{**base, **kw})  # type: ignore[arg-type]


def test_a_plan_fee_is_prepaid_and_taxed_on_what_money_paid_late_ones_name_their_month():
    row = PlanFeeRow(
        id=7,
        period_start=datetime(2026, 10, 15, tzinfo=UTC),
        period_end=datetime(2026, 11, 15, tzinfo=UTC),
        fee=Decimal(usd("20").atoms),
        plan_id="pro",
        subscription_id="sub_1",
        from_bonus=usd("5").atoms,
    )
    line = plan_fee_line(row, "Pro", NOV, USD)
    assert line.description == "Plan Pro, 2026-10-15 to 2026-11-15 (paid from prepaid balance)"
    assert (line.kind, line.settlement, line.exact, line.taxable) == (
        "plan_fee",
        "prepaid",
        usd("20"),
        usd("15"),
    )
    assert (line.source_period, line.source_type, line.source_id) == (
        "2026-10",
        "subscription_period",
        "7",
    )
    assert line.details["from_bonus"] == usd("5").format()


def test_a_package_counts_its_tokens_and_is_taxed_on_what_money_paid():
    row = PackageRow(
        id="pp_1",
        package_id="big",
        price=usd("50").atoms,
        tokens=1_000_000,
        effective_at=datetime(2026, 11, 2, tzinfo=UTC),
        from_bonus=0,
    )
    line = package_line(row, "Big", NOV, USD)
    assert line.description == "Token package Big (1,000,000 tokens, paid from prepaid balance)"
    assert (line.tokens, line.taxable, line.source_period) == (1_000_000, usd("50"), None)


def test_usage_builds_an_overage_line_and_a_prepaid_line_only_when_there_is_some():
    assert overage_line(usage(), USD) is None and prepaid_usage_line(usage(), USD) is None
    group = usage(
        late_from="2026-10",
        via_sub=True,
        overage=usd("3").atoms,
        overage_requests=2,
        overage_tokens=100,
        prepaid_records=4,
        prepaid_requests=3,
        prepaid_tokens=50,
        paid=usd("1").atoms,
        bonus=usd("2").atoms,
        shared_requests=1,
    )
    over = overage_line(group, USD)
    assert over is not None and over.settlement == "due" and over.exact == usd("3")
    assert (
        over.description
        == "Late usage from 2026-10: m1: sub-accounts at wholesale beyond prepaid credit"
    )
    pre = prepaid_usage_line(group, USD)
    assert pre is not None and pre.settlement == "prepaid"
    assert (pre.exact, pre.taxable) == (usd("3"), usd("1"))
    assert pre.details["requests_shared_with_overage"] == 1


def test_usage_covered_by_packages_and_plan_quota_only_is_a_statement():
    line = prepaid_usage_line(usage(prepaid_records=2, package_tokens=10, plan_requests=2), USD)
    assert line is not None and line.settlement == "info" and line.exact == Amount(0, USD)
    assert line.description == "m1: covered by packages and plan quota (statement)"


def test_failed_request_credits_are_statements_and_reversal_debts_are_untaxed():
    credit = failed_request_credit_line(
        CreditGroup(via_sub=False, reason="timeout", requests=3, tokens=30, credited=5), USD
    )
    assert (credit.settlement, credit.description) == (
        "info",
        "Failed requests not billed: timeout",
    )
    assert reversal_debt_line(Amount(0, USD)) is None
    debt = reversal_debt_line(usd("4"))
    assert debt is not None and (debt.kind, debt.settlement, debt.taxed) == (
        REVERSAL_DEBT,
        "due",
        False,
    )


money = st.integers(min_value=0, max_value=10**24)


@given(paid=money, bonus=money)
def test_the_taxable_part_of_prepaid_usage_is_the_paid_part_within_the_line(paid: int, bonus: int):
    line = prepaid_usage_line(usage(prepaid_records=1, paid=paid, bonus=bonus), USD)
    assert line is not None
    assert line.taxable is not None and 0 <= line.taxable.atoms <= line.exact.atoms
    assert line.exact.atoms == paid + bonus
    assert (line.settlement == "info") == (paid + bonus == 0)


def test_lines_come_as_fees_packages_overage_prepaid_usage_credits_debts_empty_ones_left_out():
    fee = PlanFeeRow(
        id=1,
        period_start=datetime(2026, 11, 1, tzinfo=UTC),
        period_end=datetime(2026, 12, 1, tzinfo=UTC),
        fee=usd("20").atoms,
        plan_id="pro",
        subscription_id="sub_1",
        from_bonus=0,
    )
    pkg = PackageRow(
        id="pp_1",
        package_id="big",
        price=usd("50").atoms,
        tokens=1_000,
        effective_at=datetime(2026, 11, 2, tzinfo=UTC),
        from_bonus=0,
    )
    rows = CloseRows(
        plan_fees=[(fee, "Pro")],
        packages=[(pkg, "Big")],
        usage=[
            usage(model="m1", overage=usd("3").atoms, overage_requests=1),
            usage(model="m2", paid=usd("1").atoms, prepaid_records=1, prepaid_requests=1),
        ],
        credits=[CreditGroup(via_sub=False, reason="timeout", requests=1, tokens=9, credited=5)],
        reversal_debt=usd("4"),
    )
    lines = invoice_lines(rows, NOV, USD)
    assert [(line.kind, line.model) for line in lines] == [
        ("plan_fee", None),
        ("package", None),
        ("overage", "m1"),
        ("prepaid_usage", "m2"),
        ("failed_request_credit", None),
        (REVERSAL_DEBT, None),
    ]
    empty = CloseRows(
        plan_fees=[], packages=[], usage=[usage()], credits=[], reversal_debt=usd("0")
    )
    assert invoice_lines(empty, NOV, USD) == []
