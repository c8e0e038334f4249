"""Finance reports, derived from the ledger (postings) and usage records; CSV and JSON.

Time is *accounting* time: a ledger entry counts at its ``effective_at`` (when the event
happened: a top-up's receipt, a usage batch's ``received_at``, a lot's expiry), a usage record
at its ``received_at`` for revenue and at ``occurred_at`` for reseller statements. Every report
carries its own check (``summary``): the trial balance sums to zero per book, the rollforward's
opening plus movements equals its closing and the ledger's cached balances (less later
movements), revenue by model equals the ledger's ``revenue:usage``, the aging's invoices equal
the ledger's ``receivable:invoiced`` as of the same moment. Callers read a report from one
snapshot (REPEATABLE READ) so that its checks compare figures of the same moment.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from invoicing.periods import Period
from ledger.amounts import Amount
from ledger.errors import NotFound
from ledger.models import OPERATOR_BOOK
from ledger.units import Unit
from ledger.units import unit as unit_of
from wallet.models import Account


@dataclass(frozen=True, slots=True)
class Report:
    """A report: named columns, rows of plain values (money as decimal strings) and a summary
    with its checks."""

    name: str
    columns: list[str]
    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``{"report", "columns", "rows", "summary"}``."""
        return {
            "report": self.name,
            "columns": self.columns,
            "rows": self.rows,
            "summary": self.summary,
        }

    def to_csv(self) -> str:
        """The rows as CSV with a header line (the summary is not part of the CSV)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: row.get(k, "") for k in self.columns})
        return out.getvalue()


def _fmt(atoms: int, unit: Unit) -> str:
    return Amount(int(atoms), unit).format()


# -- trial balance ---------------------------------------------------------------------------

_TRIAL = text(
    """
    SELECT p.book, a.type, a.code,
           coalesce(sum(p.amount) FILTER (WHERE p.amount > 0), 0) AS debits,
           coalesce(-sum(p.amount) FILTER (WHERE p.amount < 0), 0) AS credits
    FROM ledger_postings p
    JOIN ledger_accounts a ON a.id = p.account_id
    JOIN ledger_entries e ON e.id = p.entry_id
    WHERE p.phase = 0 AND p.unit = :unit AND e.effective_at <= :as_of
    GROUP BY p.book, a.type, a.code
    ORDER BY p.book, a.code
    """
)


def trial_balance(session: Session, *, currency: str, as_of: datetime) -> Report:
    """Debits and credits per book and chart code (all owners summed), as of a moment.

    Each book's debits equal its credits (``summary.books[*].balanced``): every entry balances
    per book and unit, so the report proves it again from the raw postings.
    """
    unit = unit_of(currency)
    rows = []
    books: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in session.execute(_TRIAL, {"unit": unit.code, "as_of": as_of}):
        debits, credits = int(r.debits), int(r.credits)
        books[r.book][0] += debits
        books[r.book][1] += credits
        rows.append(
            {
                "book": r.book,
                "code": r.code,
                "type": r.type,
                "debits": _fmt(debits, unit),
                "credits": _fmt(credits, unit),
                "balance": _fmt(debits - credits, unit),
            }
        )
    summary_books = {
        book: {
            "debits": _fmt(d, unit),
            "credits": _fmt(c, unit),
            "net": _fmt(d - c, unit),
            "balanced": d == c,
        }
        for book, (d, c) in sorted(books.items())
    }
    return Report(
        "trial-balance",
        ["book", "code", "type", "debits", "credits", "balance"],
        rows,
        {
            "currency": unit.code,
            "as_of": as_of.isoformat(),
            "books": summary_books,
            "balanced": all(v["balanced"] for v in summary_books.values()),
        },
    )


# -- prepaid liability rollforward -----------------------------------------------------------

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

_BALANCE_BEFORE = text(
    """
    SELECT a.code, coalesce(-sum(p.amount), 0) AS balance
    FROM ledger_postings p
    JOIN ledger_accounts a ON a.id = p.account_id
    JOIN ledger_entries e ON e.id = p.entry_id
    WHERE p.phase = 0 AND a.code IN ('customer:prepaid', 'customer:bonus')
      AND a.book = :book AND a.unit = :unit AND e.effective_at < :before
    GROUP BY a.code
    """
)

_MOVEMENTS = text(
    """
    WITH mv AS (
        SELECT p.entry_id, a.code, -p.amount AS delta
        FROM ledger_postings p
        JOIN ledger_accounts a ON a.id = p.account_id
        JOIN ledger_entries e ON e.id = p.entry_id
        WHERE p.phase = 0 AND a.code IN ('customer:prepaid', 'customer:bonus')
          AND a.book = :book AND a.unit = :unit
          AND e.effective_at >= :ps AND e.effective_at < :pe
    ), ctx AS (
        SELECT p.entry_id, array_agg(DISTINCT a.code ORDER BY a.code) AS codes
        FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id
        WHERE p.phase = 0 AND p.entry_id IN (SELECT entry_id FROM mv)
        GROUP BY p.entry_id
    )
    SELECT mv.code, e.metadata->>'kind' AS kind, ctx.codes, sign(mv.delta) AS direction,
           sum(mv.delta) AS delta
    FROM mv JOIN ctx ON ctx.entry_id = mv.entry_id JOIN ledger_entries e ON e.id = mv.entry_id
    GROUP BY 1, 2, 3, 4
    """
)


# the independent figure: the ledger's cached balances (kept by the posting trigger, audited
# against the postings) less whatever took effect after the period, read in one statement
_LEDGER_CLOSING = text(
    """
    SELECT a.code,
           coalesce(sum(a.credits_posted - a.debits_posted), 0)
             + coalesce(sum((SELECT sum(p.amount) FROM ledger_postings p
                             JOIN ledger_entries e ON e.id = p.entry_id
                             WHERE p.account_id = a.id AND p.phase = 0
                               AND e.effective_at >= :since)), 0) AS balance
    FROM ledger_accounts a
    WHERE a.code IN ('customer:prepaid', 'customer:bonus') AND a.book = :book AND a.unit = :unit
    GROUP BY a.code
    """
)


def classify_movement(code: str, kind: str | None, codes: list[str], direction: int) -> str:
    """Which rollforward line a prepaid or bonus movement belongs to, from the entry's other
    accounts: cash in = purchased (bonus: granted), cash out = refunded (bonus: clawed back),
    usage revenue or deferred revenue = consumed, promotions or breakage without cash = expired,
    credit notes = credited, invoices settled from the prepaid balance (tax of prepaid
    consumption) = invoices_paid, anything else (SLA credits, reversals...) = other."""
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


def prepaid_liability(
    session: Session, *, period: Period, currency: str, book: str = OPERATOR_BOOK
) -> Report:
    """Rollforward of what customers hold as prepaid (paid and bonus credit) over a period:
    opening + purchased + bonus granted + consumed + expired + refunded + credited + other =
    closing, every figure summed from ledger postings by accounting time (``effective_at``).

    ``summary.ties`` holds when opening plus movements equals the closing summed from the
    postings, and both equal ``ledger_closing``: the customers' balances as the ledger caches
    them (counters kept by the posting trigger, not by this report) less every movement that
    took effect from the period's end on. A report that misread the postings (a phase, a book,
    a movement left out or counted twice) would not tie."""
    unit = unit_of(currency)
    split = {"customer:prepaid": "paid", "customer:bonus": "bonus"}

    def balances(before: datetime) -> dict[str, int]:
        got = {"paid": 0, "bonus": 0}
        for r in session.execute(
            _BALANCE_BEFORE, {"book": book, "unit": unit.code, "before": before}
        ):
            got[split[r.code]] = int(r.balance)
        return got

    opening = balances(period.start)
    closing = balances(period.end)
    moves: dict[str, dict[str, int]] = {m: {"paid": 0, "bonus": 0} for m in MOVEMENTS}
    for r in session.execute(
        _MOVEMENTS, {"book": book, "unit": unit.code, "ps": period.start, "pe": period.end}
    ):
        line = classify_movement(r.code, r.kind, list(r.codes), int(r.direction))
        moves[line][split[r.code]] += int(r.delta)
    computed = {k: opening[k] + sum(m[k] for m in moves.values()) for k in ("paid", "bonus")}
    # independently: the customers' balances as the ledger caches them now, less what moved
    # from the period's end on
    ledger = {"paid": 0, "bonus": 0}
    for r in session.execute(
        _LEDGER_CLOSING, {"book": book, "unit": unit.code, "since": period.end}
    ):
        ledger[split[r.code]] = int(r.balance)

    def row(name: str, v: dict[str, int]) -> dict[str, Any]:
        return {
            "line": name,
            "paid": _fmt(v["paid"], unit),
            "bonus": _fmt(v["bonus"], unit),
            "total": _fmt(v["paid"] + v["bonus"], unit),
        }

    rows = [row("opening", opening)]
    rows += [row(m, moves[m]) for m in MOVEMENTS]
    rows.append(row("closing", closing))
    return Report(
        "prepaid-liability",
        ["line", "paid", "bonus", "total"],
        rows,
        {
            "currency": unit.code,
            "book": book,
            "period": str(period),
            "from": period.start.isoformat(),
            "to": period.end.isoformat(),
            "computed_closing": _fmt(computed["paid"] + computed["bonus"], unit),
            "ledger_closing": _fmt(ledger["paid"] + ledger["bonus"], unit),
            "ties": computed == closing == ledger,
        },
    )


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
    """The operator's usage revenue per model for a period (usage received in the period):
    money drawn from direct customers, and the wholesale price drawn from resellers' floats for
    their sub-accounts' usage. ``summary.ledger`` lists every revenue account of the operator's
    book for the period; ``summary.ties`` checks that the models add up to ``revenue:usage``."""
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
                "revenue": _fmt(int(r.revenue), unit),
                "of_which_overage": _fmt(int(r.overage), unit),
                "not_billed": _fmt(int(r.credited), unit),
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
            "usage_revenue": _fmt(total, unit),
            "ledger": {code: _fmt(v, unit) for code, v in ledger.items()},
            "ledger_total_revenue": _fmt(sum(ledger.values()), unit),
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

MARGIN_GROUPS = ("model", "upstream", "account", "day")


def margin(session: Session, *, period: Period, currency: str, group_by: str = "model") -> Report:
    """Revenue, upstream cost and margin of the usage received in a period, by ``model``,
    ``upstream``, ``account`` (a sub-account's usage is its reseller's: the operator's revenue
    is the wholesale price) or ``day``.

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
    from plans.errors import InvalidUsage
    from plans.rating import Tokens, rate_tokens

    unit = unit_of(currency)
    params = {"unit": unit.code, "ps": period.start, "pe": period.end}
    book = CostBook.load(session, unit)
    groups: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    total_revenue = total_cost = costed_revenue = 0
    uncosted = 0
    for r in session.execute(_MARGIN_RECORDS, params).yield_per(2000):
        key = {
            "model": r.model,
            "upstream": r.upstream or "(none)",
            "account": r.parent_id or r.account_id,
            "day": r.day,
        }[group_by]
        g = groups[key]
        revenue = int(r.revenue)
        g["requests"] += 1
        g["revenue"] += revenue
        total_revenue += revenue
        price = book.price(r.upstream, r.model, r.occurred_at) if r.upstream else None
        cost: int | None = None
        if price is not None:
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
                cost = rate_tokens(tokens, price, tier=r.service_tier, batch=bool(r.batch)).total
            except InvalidUsage:  # a tier the cost card does not price
                cost = None
        if cost is None:
            g["uncosted_requests"] += 1
            g["uncosted_revenue"] += revenue
            uncosted += 1
            continue
        g["cost"] += cost
        g["costed_revenue"] += revenue
        total_cost += cost
        costed_revenue += revenue
    rows = [
        {
            group_by: key,
            "requests": g["requests"],
            "revenue": _fmt(g["revenue"], unit),
            "cost": _fmt(g["cost"], unit),
            "margin": _fmt(g["costed_revenue"] - g["cost"], unit),
            "margin_pct": _pct(g["costed_revenue"] - g["cost"], g["costed_revenue"]),
            "uncosted_requests": g["uncosted_requests"],
            "uncosted_revenue": _fmt(g["uncosted_revenue"], unit),
        }
        for key, g in sorted(groups.items())
    ]
    ledger = {
        r.code: int(r.amount)
        for r in session.execute(_REVENUE_LEDGER, {**params, "book": OPERATOR_BOOK})
    }
    return Report(
        "margin",
        [
            group_by,
            "requests",
            "revenue",
            "cost",
            "margin",
            "margin_pct",
            "uncosted_requests",
            "uncosted_revenue",
        ],
        rows,
        {
            "currency": unit.code,
            "period": str(period),
            "group_by": group_by,
            "revenue": _fmt(total_revenue, unit),
            "cost": _fmt(total_cost, unit),
            "margin": _fmt(costed_revenue - total_cost, unit),
            "uncosted_requests": uncosted,
            "ledger_revenue_usage": _fmt(ledger.get("revenue:usage", 0), unit),
            "ties": ledger.get("revenue:usage", 0) == total_revenue,
        },
    )


def _pct(part: int, whole: int) -> str | None:
    """``part / whole`` as a percentage with 2 decimals, rounded half-even (a ratio shown, not
    money); ``None`` without a whole."""
    if not whole:
        return None
    from decimal import ROUND_HALF_EVEN, Decimal, localcontext

    with localcontext() as ctx:
        ctx.prec = 50
        return str(
            (Decimal(part) * 100 / Decimal(whole)).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
        )


# -- receivables aging -----------------------------------------------------------------------

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


_OPEN_AS_OF = text(
    """
    SELECT i.id, i.number, i.account_id, a.name, i.period, i.due_date,
           i.amount_due
             - coalesce((SELECT sum(p.amount) FROM invoicing_payments p
                         WHERE p.invoice_id = i.id AND p.received_at < :at), 0)
             - coalesce((SELECT sum(c.to_receivable) FROM invoicing_credit_notes c
                         WHERE c.invoice_id = i.id AND c.issued_at < :at), 0)
             + coalesce((SELECT sum(rp.amount) FROM ledger_entries re
                         JOIN ledger_postings rp ON rp.entry_id = re.id AND rp.phase = 0
                         JOIN ledger_accounts ra ON ra.id = rp.account_id
                         WHERE re.metadata->>'kind' IN ('invoice_payment_reversal',
                                                         'invoice_payment_restored')
                           AND re.metadata->>'invoice_id' = i.id
                           AND ra.code = 'receivable:invoiced'
                           AND re.effective_at < :at), 0) AS open,
           coalesce((SELECT sum(d.amount_minor) FROM payment_disputes d
                     JOIN payments py ON py.id = d.payment_id
                     WHERE py.purpose = 'invoice' AND py.purpose_ref = i.id
                       AND d.created_at < :at
                       AND (d.closed_at IS NULL OR d.closed_at >= :at)), 0) AS disputed_minor
    FROM invoicing_invoices i JOIN wallet_accounts a ON a.id = i.account_id
    WHERE i.currency = :unit AND i.status IN ('finalized', 'paid', 'disputed', 'void')
      AND i.issued_at < :at AND (i.voided_at IS NULL OR i.voided_at >= :at)
    ORDER BY i.due_date, i.number
    """
)

_RECEIVABLE_AS_OF = text(
    """
    SELECT a.code, a.owner_id, w.name, coalesce(sum(p.amount), 0) AS balance
    FROM ledger_postings p
    JOIN ledger_accounts a ON a.id = p.account_id
    JOIN ledger_entries e ON e.id = p.entry_id
    LEFT JOIN wallet_accounts w ON w.id = a.owner_id
    WHERE p.phase = 0 AND a.code IN ('receivable:invoiced', 'receivable:reversals')
      AND a.book = :book AND a.unit = :unit AND e.effective_at < :at
    GROUP BY a.code, a.owner_id, w.name
    ORDER BY a.code, a.owner_id
    """
)


def receivables_aging(session: Session, *, currency: str, as_of: date) -> Report:
    """What customers owe the operator at the end of ``as_of`` (UTC): open invoices by days
    past due, and debts left by refunds and disputes that no invoice bills yet (bucket
    ``not_invoiced``; the next invoice bills them).

    Everything is as of that moment: invoices issued by then and not voided by then, less the
    payments received (less those reversed by then: card refunds, lost disputes) and credit
    notes issued by then. ``summary.ledger_receivable`` is the
    ledger's ``receivable:invoiced`` as of the same moment (entries effective before it), which
    equals the invoices' open balances (``ties``).
    """
    unit = unit_of(currency)
    at = datetime.combine(as_of + timedelta(days=1), time(0), tzinfo=UTC)
    rows = []
    buckets = dict.fromkeys((*BUCKETS, NOT_INVOICED), 0)
    disputed_total = 0
    for inv in session.execute(_OPEN_AS_OF, {"unit": unit.code, "at": at}):
        left = max(int(inv.open), 0)
        disputed = int(inv.disputed_minor) * unit.atoms_per_minor
        if (left <= 0 and not disputed) or inv.due_date is None:
            continue
        days = (as_of - inv.due_date).days
        bucket = aging_bucket(days) if left > 0 else DISPUTED
        if left > 0:
            buckets[bucket] += left
        disputed_total += disputed
        rows.append(
            {
                "invoice": inv.number,
                "invoice_id": inv.id,
                "account_id": inv.account_id,
                "account": inv.name,
                "period": inv.period,
                "due_date": inv.due_date.isoformat(),
                "days_overdue": max(days, 0),
                "bucket": bucket,
                "open": _fmt(left, unit),
                "disputed": _fmt(disputed, unit),
            }
        )
    ledger = 0
    for r in session.execute(
        _RECEIVABLE_AS_OF, {"book": OPERATOR_BOOK, "unit": unit.code, "at": at}
    ):
        if r.code == "receivable:invoiced":
            ledger += int(r.balance)
        elif int(r.balance) > 0:
            buckets[NOT_INVOICED] += int(r.balance)
            rows.append(
                {
                    "invoice": "",
                    "invoice_id": "",
                    "account_id": r.owner_id,
                    "account": r.name or "",
                    "period": "",
                    "due_date": "",
                    "days_overdue": 0,
                    "bucket": NOT_INVOICED,
                    "open": _fmt(int(r.balance), unit),
                    "disputed": _fmt(0, unit),
                }
            )
    invoiced = sum(buckets[b] for b in BUCKETS)
    return Report(
        "receivables-aging",
        [
            "invoice",
            "invoice_id",
            "account_id",
            "account",
            "period",
            "due_date",
            "days_overdue",
            "bucket",
            "open",
            "disputed",
        ],
        rows,
        {
            "currency": unit.code,
            "as_of": as_of.isoformat(),
            "at": at.isoformat(),
            "buckets": {b: _fmt(v, unit) for b, v in buckets.items()},
            "total": _fmt(invoiced + buckets[NOT_INVOICED], unit),
            "invoiced": _fmt(invoiced, unit),
            "not_invoiced": _fmt(buckets[NOT_INVOICED], unit),
            "ledger_receivable": _fmt(ledger, unit),
            # invoice payments under an open dispute (paid until the dispute is lost)
            "disputed": _fmt(disputed_total, unit),
            "ties": ledger == invoiced,
        },
    )


# -- reseller statement ----------------------------------------------------------------------

_RESELLER = text(
    """
    SELECT r.account_id, a.name, r.model, count(*) AS requests,
           sum(r.input_tokens + r.output_tokens + r.cache_read_tokens
               + r.cache_write_5m_tokens + r.cache_write_1h_tokens + r.cache_write_30m_tokens
               + r.cache_write_12h_tokens + r.input_audio_tokens + r.input_image_tokens)
               AS tokens,
           sum(r.billed) AS retail, sum(coalesce(r.wholesale_billed, 0)) AS wholesale
    FROM wallet_usage_records r JOIN wallet_accounts a ON a.id = r.account_id
    WHERE a.parent_id = :reseller AND r.occurred_at >= :ps AND r.occurred_at < :pe
    GROUP BY r.account_id, a.name, r.model
    ORDER BY r.account_id, r.model
    """
)


def reseller_statement(session: Session, *, reseller_id: str, period: Period) -> Report:
    """A reseller's margin for a period (usage that occurred in it): per sub-account and model,
    the retail price its sub-accounts were charged, the wholesale price its float was drawn,
    and the difference.

    Raises:
        NotFound: no such reseller.
    """
    reseller = session.get(Account, reseller_id)
    if reseller is None or reseller.kind != "reseller":
        raise NotFound(f"reseller {reseller_id} does not exist")
    unit = unit_of(reseller.currency)
    rows = []
    retail_total = wholesale_total = 0
    for r in session.execute(
        _RESELLER, {"reseller": reseller.id, "ps": period.start, "pe": period.end}
    ):
        retail, wholesale = int(r.retail), int(r.wholesale)
        retail_total += retail
        wholesale_total += wholesale
        rows.append(
            {
                "sub_account_id": r.account_id,
                "sub_account": r.name,
                "model": r.model,
                "requests": int(r.requests),
                "tokens": int(r.tokens),
                "retail_billed": _fmt(retail, unit),
                "wholesale_charged": _fmt(wholesale, unit),
                "margin": _fmt(retail - wholesale, unit),
            }
        )
    return Report(
        "reseller-statement",
        [
            "sub_account_id",
            "sub_account",
            "model",
            "requests",
            "tokens",
            "retail_billed",
            "wholesale_charged",
            "margin",
        ],
        rows,
        {
            "reseller_id": reseller.id,
            "currency": unit.code,
            "period": str(period),
            "retail_billed": _fmt(retail_total, unit),
            "wholesale_charged": _fmt(wholesale_total, unit),
            "margin": _fmt(retail_total - wholesale_total, unit),
        },
    )


# -- a reseller's sub-account: overage billed, paid, open ----------------------------------------

_SUB_OVERAGE = text(
    """
    SELECT coalesce(sum(p.amount) FILTER (WHERE e.effective_at < :ps), 0) AS opening,
           coalesce(sum(p.amount) FILTER (WHERE e.effective_at >= :ps AND e.effective_at < :pe
                                            AND p.amount > 0), 0) AS billed,
           coalesce(-sum(p.amount) FILTER (WHERE e.effective_at >= :ps AND e.effective_at < :pe
                                             AND p.amount < 0), 0) AS paid,
           coalesce(sum(p.amount) FILTER (WHERE e.effective_at < :pe), 0) AS closing,
           coalesce(sum(p.amount) FILTER (WHERE e.effective_at >= :pe), 0) AS later,
           max(a.debits_posted - a.credits_posted) AS cached
    FROM ledger_accounts a
    LEFT JOIN ledger_postings p ON p.account_id = a.id AND p.phase = 0
    LEFT JOIN ledger_entries e ON e.id = p.entry_id
    WHERE a.code = 'receivable:unbilled' AND a.owner_id = :acc
    """
)


def sub_account_statement(session: Session, *, account_id: str, period: Period) -> Report:
    """A reseller's sub-account over a month: the overage it was billed (usage beyond its
    prepaid credit, in the reseller's book), what the reseller recorded as paid, and what is
    open; one row per payment. ``summary.ties``: opening + billed - paid = closing, and the
    closing equals the ledger's cached balance less what moved after the period."""
    account = session.get(Account, account_id)
    if account is None or account.parent_id is None:
        raise NotFound(f"sub-account {account_id} does not exist")
    unit = unit_of(account.currency)
    r = session.execute(
        _SUB_OVERAGE, {"acc": account_id, "ps": period.start, "pe": period.end}
    ).one()
    opening, billed, paid, closing = (int(r.opening), int(r.billed), int(r.paid), int(r.closing))
    ledger_closing = int(r.cached or 0) - int(r.later)
    rows = [
        {
            "payment_id": p.id,
            "reference": p.reference,
            "received_at": p.received_at.isoformat(),
            "amount": _fmt(int(p.amount), unit),
        }
        for p in session.execute(
            text(
                "SELECT id, reference, received_at, amount FROM wallet_overage_payments"
                " WHERE account_id = :acc AND received_at >= :ps AND received_at < :pe"
                " ORDER BY received_at, id"
            ),
            {"acc": account_id, "ps": period.start, "pe": period.end},
        )
    ]
    return Report(
        "sub-account-statement",
        ["payment_id", "reference", "received_at", "amount"],
        rows,
        {
            "account_id": account_id,
            "reseller_id": account.parent_id,
            "period": str(period),
            "currency": unit.code,
            "opening_open": _fmt(opening, unit),
            "billed": _fmt(billed, unit),
            "paid": _fmt(paid, unit),
            "open": _fmt(closing, unit),
            "ledger_open": _fmt(ledger_closing, unit),
            "ties": opening + billed - paid == closing == ledger_closing,
        },
    )
