"""Statements: a reseller's sub-accounts' usage, a sub-account's overage billed and paid."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from invoicing.periods import Period
from invoicing.reports.base import Report, fmt
from ledger.errors import NotFound
from ledger.units import unit as unit_of
from wallet.models import Account

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
    """A reseller's margin for a period (usage that occurred in it).

    Per sub-account and model, the retail price its sub-accounts were charged, the wholesale price
    its float was drawn, and the difference.

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
                "retail_billed": fmt(retail, unit),
                "wholesale_charged": fmt(wholesale, unit),
                "margin": fmt(retail - wholesale, unit),
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
            "retail_billed": fmt(retail_total, unit),
            "wholesale_charged": fmt(wholesale_total, unit),
            "margin": fmt(retail_total - wholesale_total, unit),
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
    """A reseller's sub-account over a month.

    The overage it was billed (usage beyond its prepaid credit, in the reseller's book), what the
    reseller recorded as paid, and what is open; one row per payment. ``summary.ties``: opening +
    billed - paid = closing, and the closing equals the ledger's cached balance less what moved
    after the period.
    """
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
            "amount": fmt(int(p.amount), unit),
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
            "opening_open": fmt(opening, unit),
            "billed": fmt(billed, unit),
            "paid": fmt(paid, unit),
            "open": fmt(closing, unit),
            "ledger_open": fmt(ledger_closing, unit),
            "ties": opening + billed - paid == closing == ledger_closing,
        },
    )
