"""Usage reports: revenue by model and margin (revenue less upstream cost)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from invoicing.periods import Period
from invoicing.reports.base import Report, fmt
from invoicing.reports.rules import (
    MARGIN_GROUPS,
    pct,
)
from ledger.models import OPERATOR_BOOK
from ledger.units import Unit
from ledger.units import unit as unit_of

# -- revenue by model ------------------------------------------------------------------------

_REVENUE = text(
    """
    SELECT r.model, count(*) AS requests,
           sum(r.input_tokens + r.output_tokens + r.cache_read_tokens
               + r.cache_write_5m_tokens + r.cache_write_1h_tokens + r.cache_write_30m_tokens
               + r.cache_write_12h_tokens + r.input_audio_tokens + r.input_image_tokens)
               AS tokens,
           sum(CASE WHEN a.parent_id IS NULL THEN r.billed
                    ELSE coalesce(r.wholesale_billed, 0) END) AS revenue,
           sum(CASE WHEN a.parent_id IS NULL THEN coalesce(CAST(r.drawn->>'overage' AS numeric), 0)
                    ELSE coalesce(CAST(r.wholesale_drawn->>'overage' AS numeric), 0) END)
             AS overage,
           sum(CASE WHEN a.parent_id IS NULL THEN r.credited
                    ELSE coalesce(r.wholesale_credited, 0) END) AS credited,
           sum(CASE WHEN a.parent_id IS NULL
                    THEN coalesce(CAST(r.drawn->>'package_tokens' AS numeric), 0) ELSE 0 END)
             AS package_tokens,
           sum(CASE WHEN a.parent_id IS NULL
                    THEN coalesce(CAST(r.drawn->>'plan_requests' AS numeric), 0) ELSE 0 END)
             AS plan_requests
    FROM wallet_usage_records r JOIN wallet_accounts a ON a.id = r.account_id
    WHERE r.currency = :unit AND r.received_at >= :ps AND r.received_at < :pe
    GROUP BY r.model ORDER BY r.model
    """
)

_REVENUE_LEDGER = text(
    """
    SELECT a.code, coalesce(-sum(p.amount), 0) AS amount
    FROM ledger_postings p
    JOIN ledger_accounts a ON a.id = p.account_id
    JOIN ledger_entries e ON e.id = p.entry_id
    WHERE p.phase = 0 AND a.book = :book AND a.unit = :unit
      AND a.type IN ('revenue', 'contra_revenue')
      AND e.effective_at >= :ps AND e.effective_at < :pe
    GROUP BY a.code ORDER BY a.code
    """
)


def revenue_by_model(session: Session, *, period: Period, currency: str) -> Report:
    """The operator's usage revenue per model for a period (usage received in the period).

    Money drawn from direct customers, and the wholesale price drawn from resellers' floats for
    their sub-accounts' usage. ``summary.ledger`` lists every revenue account of the operator's book
    for the period; ``summary.ties`` checks that the models add up to ``revenue:usage``.
    """
    unit = unit_of(currency)
    params = {"unit": unit.code, "ps": period.start, "pe": period.end}
    rows = []
    total = 0
    for r in session.execute(_REVENUE, params):
        total += int(r.revenue)
        rows.append(
            {
                "model": r.model,
                "requests": int(r.requests),
                "tokens": int(r.tokens),
                "revenue": fmt(int(r.revenue), unit),
                "of_which_overage": fmt(int(r.overage), unit),
                "not_billed": fmt(int(r.credited), unit),
                "package_tokens": int(r.package_tokens),
                "plan_requests": int(r.plan_requests),
            }
        )
    ledger = {
        r.code: int(r.amount)
        for r in session.execute(_REVENUE_LEDGER, {**params, "book": OPERATOR_BOOK})
    }
    return Report(
        "revenue-by-model",
        [
            "model",
            "requests",
            "tokens",
            "revenue",
            "of_which_overage",
            "not_billed",
            "package_tokens",
            "plan_requests",
        ],
        rows,
        {
            "currency": unit.code,
            "period": str(period),
            "usage_revenue": fmt(total, unit),
            "ledger": {code: fmt(v, unit) for code, v in ledger.items()},
            "ledger_total_revenue": fmt(sum(ledger.values()), unit),
            "ties": ledger.get("revenue:usage", 0) == total,
        },
    )


# -- margin ---------------------------------------------------------------------------------

_MARGIN_RECORDS = text(
    """
    SELECT r.model, r.upstream, r.account_id, a.parent_id, r.occurred_at,
           to_char(r.received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
           CASE WHEN a.parent_id IS NULL THEN r.billed
                ELSE coalesce(r.wholesale_billed, 0) END AS revenue,
           r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_5m_tokens,
           r.cache_write_1h_tokens, r.reasoning_tokens, r.cache_write_30m_tokens,
           r.cache_write_12h_tokens, r.input_audio_tokens, r.input_image_tokens,
           r.output_audio_tokens, r.output_image_tokens, r.tool_calls, r.service_tier, r.batch
    FROM wallet_usage_records r JOIN wallet_accounts a ON a.id = r.account_id
    WHERE r.currency = :unit AND r.received_at >= :ps AND r.received_at < :pe
    """
)


#: what a margin group sums
_MARGIN_SUMS = (
    "requests",
    "revenue",
    "cost",
    "costed_revenue",
    "uncosted_requests",
    "uncosted_revenue",
)

#: the margin report's columns after the group's
_MARGIN_COLUMNS = (
    "requests",
    "revenue",
    "cost",
    "margin",
    "margin_pct",
    "uncosted_requests",
    "uncosted_revenue",
)


def _margin_key(r: Any, group_by: str) -> str:
    """The group a usage record counts in."""
    return str(
        {
            "model": r.model,
            "upstream": r.upstream or "(none)",
            "account": r.parent_id or r.account_id,
            "day": r.day,
        }[group_by]
    )


def _record_cost(book: Any, r: Any) -> int | None:
    """A usage record's upstream cost, rated at its upstream's cost card in force when it occurred.

    None when it has no upstream or the card does not price it (model or tier).
    """
    from plans.errors import InvalidUsage
    from plans.rating import Tokens, rate_tokens

    price = book.price(r.upstream, r.model, r.occurred_at) if r.upstream else None
    if price is None:
        return None
    tokens = Tokens(
        int(r.input_tokens),
        int(r.output_tokens),
        int(r.cache_read_tokens),
        int(r.cache_write_5m_tokens),
        int(r.cache_write_1h_tokens),
        int(r.reasoning_tokens),
        int(r.cache_write_30m_tokens),
        int(r.cache_write_12h_tokens),
        int(r.input_audio_tokens),
        int(r.input_image_tokens),
        int(r.output_audio_tokens),
        int(r.output_image_tokens),
        tuple(sorted((str(k), int(v)) for k, v in (r.tool_calls or {}).items())),
    )
    try:
        cost: int = rate_tokens(tokens, price, tier=r.service_tier, batch=bool(r.batch)).total
    except InvalidUsage:  # a tier the cost card does not price
        return None
    return cost


def _add_record(g: dict[str, int], revenue: int, cost: int | None) -> None:
    """Count one record's revenue and cost (or its revenue as uncosted) in its group."""
    g["requests"] += 1
    g["revenue"] += revenue
    if cost is None:
        g["uncosted_requests"] += 1
        g["uncosted_revenue"] += revenue
        return
    g["cost"] += cost
    g["costed_revenue"] += revenue


def _margin_row(group_by: str, key: str, g: dict[str, int], unit: Unit) -> dict[str, Any]:
    """A margin group as a report row."""
    return {
        group_by: key,
        "requests": g["requests"],
        "revenue": fmt(g["revenue"], unit),
        "cost": fmt(g["cost"], unit),
        "margin": fmt(g["costed_revenue"] - g["cost"], unit),
        "margin_pct": pct(g["costed_revenue"] - g["cost"], g["costed_revenue"]),
        "uncosted_requests": g["uncosted_requests"],
        "uncosted_revenue": fmt(g["uncosted_revenue"], unit),
    }


def margin(session: Session, *, period: Period, currency: str, group_by: str = "model") -> Report:
    """Revenue, upstream cost and margin of the usage received in a period, grouped as asked.

    The groups are by ``model``, ``upstream``, ``account`` (a sub-account's usage is its reseller's:
    the operator's revenue is the wholesale price) or ``day``.

    Revenue is what ``revenue-by-model`` counts (it ties to ``revenue:usage`` in the ledger:
    ``summary.ties``). Each record's cost is its tokens, service tier and tool calls rated at
    the cost card of its ``upstream`` in force when it occurred (:mod:`plans.costs`), with the
    one rater; also a record the failed-request policy credited costs what the vendor charged.
    Records without an upstream, or whose upstream has no cost for the model (or its tier), are
    counted as ``uncosted`` (their revenue is in the totals, their margin is not).
    """
    if group_by not in MARGIN_GROUPS:
        raise ValueError(f"group_by must be one of {', '.join(MARGIN_GROUPS)}")
    from plans.costs import CostBook

    unit = unit_of(currency)
    params = {"unit": unit.code, "ps": period.start, "pe": period.end}
    book = CostBook.load(session, unit)
    groups: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in session.execute(_MARGIN_RECORDS, params).yield_per(2000):
        _add_record(groups[_margin_key(r, group_by)], int(r.revenue), _record_cost(book, r))
    rows = [_margin_row(group_by, key, g, unit) for key, g in sorted(groups.items())]
    total = {k: sum(g[k] for g in groups.values()) for k in _MARGIN_SUMS}
    total_revenue, total_cost = total["revenue"], total["cost"]
    costed_revenue, uncosted = total["costed_revenue"], total["uncosted_requests"]
    ledger = {
        r.code: int(r.amount)
        for r in session.execute(_REVENUE_LEDGER, {**params, "book": OPERATOR_BOOK})
    }
    return Report(
        "margin",
        [group_by, *_MARGIN_COLUMNS],
        rows,
        {
            "currency": unit.code,
            "period": str(period),
            "group_by": group_by,
            "revenue": fmt(total_revenue, unit),
            "cost": fmt(total_cost, unit),
            "margin": fmt(costed_revenue - total_cost, unit),
            "uncosted_requests": uncosted,
            "ledger_revenue_usage": fmt(ledger.get("revenue:usage", 0), unit),
            "ties": ledger.get("revenue:usage", 0) == total_revenue,
        },
    )
