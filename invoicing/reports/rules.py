"""How finance reports classify what they sum (pure, no database).

The prepaid rollforward's movement lines, the receivables' aging buckets, the margin's groupings and
percentages.
"""

from __future__ import annotations

PREPAID_CODES = ("customer:prepaid", "customer:bonus")
MOVEMENTS = (
    "purchased",
    "bonus_granted",
    "consumed",
    "expired",
    "refunded",
    "credited",
    "invoices_paid",
    "other",
)


def classify_movement(code: str, kind: str | None, codes: list[str], direction: int) -> str:
    """The rollforward line of a prepaid or bonus movement, from the entry's other accounts.

    Cash in = purchased (bonus: granted), cash out = refunded (bonus: clawed back), usage revenue or
    deferred revenue = consumed, promotions or breakage without cash = expired, credit notes =
    credited, invoices settled from the prepaid balance (tax of prepaid consumption) =
    invoices_paid, anything else (SLA credits, reversals...) = other.
    """
    if any(c.startswith("cash:") for c in codes):
        if direction > 0:
            return "bonus_granted" if code == "customer:bonus" else "purchased"
        return "refunded"
    if kind == "credit_note":
        return "credited"
    if kind == "invoice_paid_from_prepaid":
        return "invoices_paid"
    if {"revenue:usage", "deferred:packages", "deferred:subscriptions"} & set(codes):
        return "consumed"
    if direction < 0 and (
        (code == "customer:bonus" and "promotions" in codes)
        or (code == "customer:prepaid" and "revenue:breakage" in codes)
    ):
        return "expired"
    return "other"


MARGIN_GROUPS = ("model", "upstream", "account", "day")


def pct(part: int, whole: int) -> str | None:
    """``part / whole`` as a percentage with 2 decimals, rounded half-even.

    A ratio shown, not money; ``None`` without a whole.
    """
    if not whole:
        return None
    from decimal import ROUND_HALF_EVEN, Decimal, localcontext

    with localcontext() as ctx:
        ctx.prec = 50
        return str(
            (Decimal(part) * 100 / Decimal(whole)).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
        )


BUCKETS = ("current", "1-30", "31-60", "61-90", "90+")
#: debts left by refunds and disputes (``receivable:reversals``) that no invoice bills yet
NOT_INVOICED = "not_invoiced"
#: rows of invoices paid in full whose payment is under an open dispute (nothing owed yet)
DISPUTED = "disputed"


def aging_bucket(days_overdue: int) -> str:
    """``current`` (not yet due), ``1-30``, ``31-60``, ``61-90`` or ``90+`` days past due."""
    if days_overdue <= 0:
        return "current"
    if days_overdue <= 30:
        return "1-30"
    if days_overdue <= 60:
        return "31-60"
    if days_overdue <= 90:
        return "61-90"
    return "90+"
