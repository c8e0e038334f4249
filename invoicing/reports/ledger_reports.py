"""Ledger reports: the trial balance and the prepaid liability rollforward."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from invoicing.periods import Period
from invoicing.reports.base import Report, fmt
from invoicing.reports.rules import (
    MOVEMENTS,
    classify_movement,
)
from ledger.models import OPERATOR_BOOK
from ledger.units import Unit
from ledger.units import unit as unit_of

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
                "debits": fmt(debits, unit),
                "credits": fmt(credits, unit),
                "balance": fmt(debits - credits, unit),
            }
        )
    summary_books = {
        book: {
            "debits": fmt(d, unit),
            "credits": fmt(c, unit),
            "net": fmt(d - c, unit),
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


#: the rollforward's columns of each ledger account
_SPLIT = {"customer:prepaid": "paid", "customer:bonus": "bonus"}


def _balances(session: Session, query: Any, params: dict[str, Any]) -> dict[str, int]:
    """Paid and bonus balances as ``query`` sums them (rows of ``code`` and ``balance``)."""
    got = {"paid": 0, "bonus": 0}
    for r in session.execute(query, params):
        got[_SPLIT[r.code]] = int(r.balance)
    return got


def _rollforward_row(name: str, v: dict[str, int], unit: Unit) -> dict[str, Any]:
    """One rollforward line: paid, bonus and their total."""
    return {
        "line": name,
        "paid": fmt(v["paid"], unit),
        "bonus": fmt(v["bonus"], unit),
        "total": fmt(v["paid"] + v["bonus"], unit),
    }


def prepaid_liability(
    session: Session, *, period: Period, currency: str, book: str = OPERATOR_BOOK
) -> Report:
    """Rollforward of what customers hold as prepaid (paid and bonus credit) over a period.

    Opening + purchased + bonus granted + consumed + expired + refunded + credited + other =
    closing, every figure summed from ledger postings by accounting time (``effective_at``).

    ``summary.ties`` holds when opening plus movements equals the closing summed from the
    postings, and both equal ``ledger_closing``: the customers' balances as the ledger caches
    them (counters kept by the posting trigger, not by this report) less every movement that
    took effect from the period's end on. A report that misread the postings (a phase, a book,
    a movement left out or counted twice) would not tie.
    """
    unit = unit_of(currency)

    opening = _balances(
        session, _BALANCE_BEFORE, {"book": book, "unit": unit.code, "before": period.start}
    )
    closing = _balances(
        session, _BALANCE_BEFORE, {"book": book, "unit": unit.code, "before": period.end}
    )
    moves: dict[str, dict[str, int]] = {m: {"paid": 0, "bonus": 0} for m in MOVEMENTS}
    for r in session.execute(
        _MOVEMENTS, {"book": book, "unit": unit.code, "ps": period.start, "pe": period.end}
    ):
        line = classify_movement(r.code, r.kind, list(r.codes), int(r.direction))
        moves[line][_SPLIT[r.code]] += int(r.delta)
    computed = {k: opening[k] + sum(m[k] for m in moves.values()) for k in ("paid", "bonus")}
    # independently: the customers' balances as the ledger caches them now, less what moved
    # from the period's end on
    ledger = _balances(
        session, _LEDGER_CLOSING, {"book": book, "unit": unit.code, "since": period.end}
    )
    rows = [_rollforward_row("opening", opening, unit)]
    rows += [_rollforward_row(m, moves[m], unit) for m in MOVEMENTS]
    rows.append(_rollforward_row("closing", closing, unit))
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
            "computed_closing": fmt(computed["paid"] + computed["bonus"], unit),
            "ledger_closing": fmt(ledger["paid"] + ledger["bonus"], unit),
            "ties": computed == closing == ledger,
        },
    )
