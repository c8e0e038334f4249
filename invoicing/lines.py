"""Invoice line building: one builder per line kind, from the rows the close reads (pure).

Each builder turns what the database holds (a subscription period, a package purchase, usage
grouped by model, failed-request credits grouped by reason, the refund and dispute debts not
billed yet) into a :class:`DraftLine`: its exact amount, how it is settled, its taxable part
and what it counts. Rounding and tax come later (invoicing/arithmetic.py ``price_line``). See
docs/invoicing.md for the kinds and how requests and tokens are counted once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from invoicing.arithmetic import Settlement
from invoicing.periods import Period
from ledger.amounts import Amount
from ledger.units import Unit

#: the line kind that bills refund and dispute debts (``receivable:reversals``)
REVERSAL_DEBT = "reversal_debt"

#: a numeric column as the database returns it (sums are ``numeric``)
Number = int | Decimal


@dataclass(frozen=True, slots=True)
class DraftLine:
    """A line before rounding: its exact amount and what it bills."""

    kind: str
    description: str
    settlement: Settlement
    exact: Amount
    model: str | None = None
    source_period: str | None = None
    requests: int = 0
    tokens: int = 0
    source_type: str | None = None
    source_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: the exact taxable part (None: all of it); see invoicing/arithmetic.py ``price_line``
    taxable: Amount | None = None
    #: False for lines that are not a supply (a debt from a reversed payment): never taxed
    taxed: bool = True

    def shown(self) -> dict[str, Any]:
        """What the line says besides its money: kind, description, model, counts, settlement."""
        return {
            "kind": self.kind,
            "description": self.description,
            "model": self.model,
            "source_period": self.source_period,
            "requests": self.requests,
            "tokens": self.tokens,
            "settlement": self.settlement,
        }


@dataclass(frozen=True, slots=True)
class PlanFeeRow:
    """A subscription period's fee not invoiced yet (``from_bonus``: the part bonus paid)."""

    id: int
    period_start: datetime
    period_end: datetime
    fee: Number
    plan_id: str
    subscription_id: str
    from_bonus: Number


@dataclass(frozen=True, slots=True)
class PackageRow:
    """A package purchase not invoiced yet (``from_bonus``: the part bonus paid)."""

    id: str
    package_id: str
    price: Number
    tokens: Number
    effective_at: datetime
    from_bonus: Number


@dataclass(frozen=True, slots=True)
class UsageGroup:
    """Usage of one model in one month, as the close sums it.

    Of the account, or of a reseller's sub-accounts at wholesale. ``late_from``: an earlier month's
    usage received late.
    """

    late_from: str | None
    via_sub: bool
    model: str
    overage_requests: Number
    overage_tokens: Number
    overage: Number
    prepaid_requests: Number
    shared_requests: Number
    prepaid_tokens: Number
    bonus: Number
    paid: Number
    package_tokens: Number
    plan_requests: Number
    prepaid_records: Number


@dataclass(frozen=True, slots=True)
class CreditGroup:
    """Failed requests of one reason code that were not billed (``credited``: the amount)."""

    via_sub: bool
    reason: str
    requests: Number
    tokens: Number
    credited: Number


def _late(label: str | None, text_: str) -> str:
    return f"Late usage from {label}: {text_}" if label else text_


def _late_label(at: datetime, period: Period) -> str | None:
    """The month of an item from before ``period`` (None for the period's own items)."""
    return str(Period.containing(at)) if at < period.start else None


def plan_fee_line(row: PlanFeeRow, plan_name: str, period: Period, unit: Unit) -> DraftLine:
    """A plan fee: charged to the prepaid balance, taxed on the part paid with money."""
    fee, from_bonus = int(row.fee), int(row.from_bonus)
    return DraftLine(
        kind="plan_fee",
        description=(
            f"Plan {plan_name}, "
            f"{row.period_start.date().isoformat()} to {row.period_end.date().isoformat()}"
            " (paid from prepaid balance)"
        ),
        settlement="prepaid",
        exact=Amount(fee, unit),
        source_period=_late_label(row.period_start, period),
        requests=1,
        source_type="subscription_period",
        source_id=str(row.id),
        details={
            "plan_id": row.plan_id,
            "subscription_id": row.subscription_id,
            "from_bonus": Amount(from_bonus, unit).format(),
        },
        taxable=Amount(fee - from_bonus, unit),
    )


def package_line(row: PackageRow, package_name: str, period: Period, unit: Unit) -> DraftLine:
    """A token package: charged to the prepaid balance, taxed on the part paid with money."""
    price, from_bonus = int(row.price), int(row.from_bonus)
    return DraftLine(
        kind="package",
        description=(
            f"Token package {package_name} ({int(row.tokens):,} tokens, paid from prepaid balance)"
        ),
        settlement="prepaid",
        exact=Amount(price, unit),
        source_period=_late_label(row.effective_at, period),
        requests=1,
        tokens=int(row.tokens),
        source_type="package_purchase",
        source_id=row.id,
        details={"package_id": row.package_id, "from_bonus": Amount(from_bonus, unit).format()},
        taxable=Amount(price - from_bonus, unit),
    )


def overage_line(row: UsageGroup, unit: Unit) -> DraftLine | None:
    """Usage beyond prepaid credit, billed on this invoice (None when there was none)."""
    if not row.overage:
        return None
    who = "sub-accounts at wholesale" if row.via_sub else "usage"
    return DraftLine(
        kind="overage",
        description=_late(row.late_from, f"{row.model}: {who} beyond prepaid credit"),
        settlement="due",
        exact=Amount(int(row.overage), unit),
        model=row.model,
        source_period=row.late_from,
        requests=int(row.overage_requests),
        tokens=int(row.overage_tokens),
        details={"via_sub_accounts": bool(row.via_sub)},
    )


def prepaid_usage_line(row: UsageGroup, unit: Unit) -> DraftLine | None:
    """Usage paid from the prepaid balance (None when there was none).

    Charged when bonus or paid credit paid it, a statement when only package tokens and plan quota
    did (their packages and plan fees are lines of their own).
    """
    if not row.prepaid_records:
        return None
    who = "sub-accounts at wholesale, " if row.via_sub else ""
    money = int(row.bonus) + int(row.paid)
    what = (
        f"{row.model}: {who}paid from prepaid credit"
        if money
        else f"{row.model}: {who}covered by packages and plan quota (statement)"
    )
    return DraftLine(
        kind="prepaid_usage",
        description=_late(row.late_from, what),
        settlement="prepaid" if money else "info",
        exact=Amount(money, unit),
        model=row.model,
        source_period=row.late_from,
        requests=int(row.prepaid_requests),
        tokens=int(row.prepaid_tokens),
        details={
            "via_sub_accounts": bool(row.via_sub),
            "paid": Amount(int(row.paid), unit).format(),
            "bonus": Amount(int(row.bonus), unit).format(),
            "package_tokens": int(row.package_tokens),
            "plan_requests": int(row.plan_requests),
            # requests paid partly from here and partly as overage: counted on the overage
            # line, their tokens shared between the two
            "requests_shared_with_overage": int(row.shared_requests),
        },
        taxable=Amount(int(row.paid), unit),
    )


def failed_request_credit_line(row: CreditGroup, unit: Unit) -> DraftLine:
    """A statement of the failed requests of one reason code that were not billed."""
    who = " (sub-accounts, at wholesale)" if row.via_sub else ""
    return DraftLine(
        kind="failed_request_credit",
        description=f"Failed requests not billed: {row.reason}{who}",
        settlement="info",
        exact=Amount(int(row.credited), unit),
        requests=int(row.requests),
        tokens=int(row.tokens),
        details={"reason": row.reason, "via_sub_accounts": bool(row.via_sub)},
    )


def reversal_debt_line(owed: Amount) -> DraftLine | None:
    """What refunds and disputes left the customer owing, billed untaxed (None when nothing)."""
    if owed.atoms <= 0:
        return None
    return DraftLine(
        kind=REVERSAL_DEBT,
        description="Owed from refunds and disputes (credit already spent)",
        settlement="due",
        exact=owed,
        taxed=False,
        details={"ledger_account": "receivable:reversals"},
    )


@dataclass(frozen=True, slots=True)
class CloseRows:
    """What the close reads for one account and period, before any line is built.

    Attributes:
        plan_fees: subscription fees not invoiced yet, each with its plan's name.
        packages: package purchases not invoiced yet, each with its package's name.
        usage: usage grouped by month, model and whether sub-accounts used it.
        credits: failed-request credits grouped by reason.
        reversal_debt: what refunds and disputes left owing that no invoice bills yet.
    """

    plan_fees: Sequence[tuple[PlanFeeRow, str]]
    packages: Sequence[tuple[PackageRow, str]]
    usage: Sequence[UsageGroup]
    credits: Sequence[CreditGroup]
    reversal_debt: Amount


def invoice_lines(rows: CloseRows, period: Period, unit: Unit) -> list[DraftLine]:
    """Every line of an invoice, in its order; a line with nothing to bill is left out.

    The order: plan fees, packages, overage, prepaid usage, failed-request credits, then the
    refund and dispute debts.
    """
    lines: list[DraftLine | None] = []
    lines += [plan_fee_line(row, name, period, unit) for row, name in rows.plan_fees]
    lines += [package_line(row, name, period, unit) for row, name in rows.packages]
    lines += [overage_line(group, unit) for group in rows.usage]
    lines += [prepaid_usage_line(group, unit) for group in rows.usage]
    lines += [failed_request_credit_line(group, unit) for group in rows.credits]
    lines.append(reversal_debt_line(rows.reversal_debt))
    return [line for line in lines if line is not None]
