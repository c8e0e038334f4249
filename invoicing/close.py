"""The month-end close: one invoice per billing account and period, crash-safe and repeatable.

``close_period`` walks the billing accounts (top-level accounts: direct customers and
resellers) in id order and closes each in its **own transaction** (``close_account``):

1. take the account's usage gate exclusively (wallet/gate.py) and read the cut-off from the
   database clock: every usage batch of the tree either committed before (visible, received at
   or before the cut-off) or will be received after it;
2. if the account already has an invoice for the period, stop (a re-run, or a run after a
   crash, finds the invoices the first run committed and makes no new ones);
3. collect the lines: plan fees and package purchases not invoiced yet (each billed once: a
   unique index on the line's source), usage by model for the period (received at or before the
   cut-off) plus *late* usage of earlier periods received since the previous invoice's cut-off,
   failed-request credits by reason code, and the debts refunds and disputes left
   (``receivable:reversals``) that no invoice bills yet;
4. round each line once, tax every charged line on its part paid with money (overage, and the
   paid-credit part of what the prepaid balance paid), write the draft with its lines, and
   finalize it: post the ledger entry (which moves the billed debts) and take the next number
   of the series last, just before commit.

A crash between two accounts leaves the committed invoices in place and nothing of the others
(their transactions rolled back, numbers included), so the re-run completes the period with
exactly one invoice per account and no gap in the numbering. See docs/invoicing.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from invoicing.arithmetic import PricedLine, Totals, price_line, totals
from invoicing.errors import (
    InvalidPeriod,
    InvoiceExists,
    NotABillingAccount,
    PeriodNotEnded,
    PeriodOrder,
)
from invoicing.lifecycle import finalize_invoice
from invoicing.lines import (
    REVERSAL_DEBT,
    CloseRows,
    CreditGroup,
    DraftLine,
    PackageRow,
    PlanFeeRow,
    UsageGroup,
    invoice_lines,
)
from invoicing.models import BillingPeriod, Invoice, InvoiceLine
from invoicing.periods import Period
from invoicing.profiles import BillingTerms, billing_terms
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.errors import NotFound
from ledger.ids import new_id
from plans.catalog import get_package, get_plan
from wallet.accounts import lock_accounts
from wallet.gate import enter_exclusive
from wallet.ledger_accounts import book_of, currency_of
from wallet.models import Account

# -- collecting lines ------------------------------------------------------------------------

_USAGE = text(
    """
    WITH recs AS (
        SELECT r.model, r.occurred_at, r.account_id <> :root AS via_sub,
               r.input_tokens + r.output_tokens + r.cache_read_tokens
                 + r.cache_write_5m_tokens + r.cache_write_1h_tokens + r.cache_write_30m_tokens
                 + r.cache_write_12h_tokens + r.input_audio_tokens + r.input_image_tokens AS tokens,
               CASE WHEN r.account_id = :root THEN r.drawn
                    ELSE coalesce(r.wholesale_drawn, '{}'::jsonb) END AS d
        FROM wallet_usage_records r
        WHERE r.account_id = ANY(CAST(:tree AS text[]))
          AND ((r.occurred_at >= :ps AND r.occurred_at < :pe AND r.received_at <= :cut)
               OR (r.occurred_at < :ps AND r.received_at <= :cut
                   AND (CAST(:prev AS timestamptz) IS NULL OR r.received_at > :prev)))
    ), paid AS (
        SELECT model, occurred_at, via_sub, tokens, d,
               coalesce(CAST(d->>'overage' AS numeric), 0) AS ov,
               coalesce(CAST(d->>'bonus' AS numeric), 0) AS bonus,
               coalesce(CAST(d->>'paid' AS numeric), 0) AS paid,
               least(coalesce(CAST(d->>'package_tokens' AS numeric), 0), tokens) AS pkg,
               d ?| array['bonus', 'paid', 'package_tokens', 'plan_requests'] AS from_prepaid
        FROM recs
    ), split AS (
        -- a record paid partly from prepaid credit and partly as overage counts its tokens
        -- once: the tokens paid with money are shared in proportion to the money (floored on
        -- the overage side); package tokens stay on the prepaid side
        SELECT *, CASE WHEN ov > 0 THEN div((tokens - pkg) * ov, ov + bonus + paid) ELSE 0 END
                    AS ov_tokens
        FROM paid
    )
    SELECT CASE WHEN occurred_at < :ps
                THEN to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM') END AS late_from,
           via_sub, model,
           count(*) FILTER (WHERE ov > 0) AS overage_requests,
           coalesce(sum(ov_tokens) FILTER (WHERE ov > 0), 0) AS overage_tokens,
           coalesce(sum(ov), 0) AS overage,
           count(*) FILTER (WHERE from_prepaid AND ov = 0) AS prepaid_requests,
           count(*) FILTER (WHERE from_prepaid AND ov > 0) AS shared_requests,
           coalesce(sum(tokens - ov_tokens) FILTER (WHERE from_prepaid), 0) AS prepaid_tokens,
           coalesce(sum(bonus), 0) AS bonus,
           coalesce(sum(paid), 0) AS paid,
           coalesce(sum(CAST(d->>'package_tokens' AS numeric)), 0) AS package_tokens,
           coalesce(sum(CAST(d->>'plan_requests' AS numeric)), 0) AS plan_requests,
           count(*) FILTER (WHERE from_prepaid) AS prepaid_records
    FROM split
    GROUP BY 1, 2, 3
    ORDER BY late_from NULLS FIRST, via_sub, model
    """
)

_CREDITS = text(
    """
    SELECT r.account_id <> :root AS via_sub, coalesce(r.reason, 'credited') AS reason,
           count(*) AS requests,
           sum(r.input_tokens + r.output_tokens + r.cache_read_tokens
               + r.cache_write_5m_tokens + r.cache_write_1h_tokens + r.cache_write_30m_tokens
               + r.cache_write_12h_tokens + r.input_audio_tokens + r.input_image_tokens)
               AS tokens,
           sum(CASE WHEN r.account_id = :root THEN r.credited
                    ELSE coalesce(r.wholesale_credited, 0) END) AS credited
    FROM wallet_usage_records r
    WHERE r.account_id = ANY(CAST(:tree AS text[]))
      AND ((r.occurred_at >= :ps AND r.occurred_at < :pe AND r.received_at <= :cut)
           OR (r.occurred_at < :ps AND r.received_at <= :cut
               AND (CAST(:prev AS timestamptz) IS NULL OR r.received_at > :prev)))
      AND CASE WHEN r.account_id = :root THEN r.credited
               ELSE coalesce(r.wholesale_credited, 0) END > 0
    GROUP BY 1, 2
    ORDER BY 1, 2
    """
)

_PLAN_FEES = text(
    """
    SELECT sp.id, sp.period_start, sp.period_end, sp.fee, s.plan_id, s.id AS subscription_id,
           coalesce((SELECT sum(p.amount) FROM ledger_postings p
                     JOIN ledger_accounts a ON a.id = p.account_id
                     WHERE p.entry_id = sp.entry_id AND p.phase = 0 AND p.amount > 0
                       AND a.code = 'customer:bonus'), 0) AS from_bonus
    FROM wallet_subscription_periods sp
    JOIN wallet_subscriptions s ON s.id = sp.subscription_id
    WHERE s.account_id = :acc AND sp.fee > 0 AND sp.period_start < :pe
      AND NOT EXISTS (SELECT 1 FROM invoicing_invoice_lines l
                      WHERE l.source_type = 'subscription_period'
                        AND l.source_id = CAST(sp.id AS text))
    ORDER BY sp.period_start, sp.id
    """
)

_PACKAGES = text(
    """
    SELECT pp.id, pp.package_id, pp.price, pp.tokens, e.effective_at,
           coalesce((SELECT sum(p.amount) FROM ledger_postings p
                     JOIN ledger_accounts a ON a.id = p.account_id
                     WHERE p.entry_id = pp.entry_id AND p.phase = 0 AND p.amount > 0
                       AND a.code = 'customer:bonus'), 0) AS from_bonus
    FROM wallet_package_purchases pp
    JOIN ledger_entries e ON e.id = pp.entry_id
    WHERE pp.account_id = :acc AND pp.price > 0 AND e.effective_at < :pe
      AND NOT EXISTS (SELECT 1 FROM invoicing_invoice_lines l
                      WHERE l.source_type = 'package_purchase' AND l.source_id = pp.id)
    ORDER BY e.effective_at, pp.id
    """
)


_REVERSALS_UNBILLED = text(
    """
    SELECT coalesce((SELECT sum(a.debits_posted - a.credits_posted) FROM ledger_accounts a
                     WHERE a.code = 'receivable:reversals' AND a.owner_id = :acc
                       AND a.book = :book AND a.unit = :unit), 0)
         - coalesce((SELECT sum(l.amount_exact)
                     FROM invoicing_invoice_lines l
                     JOIN invoicing_invoices i ON i.id = l.invoice_id
                     WHERE i.account_id = :acc AND i.status = 'draft'
                       AND l.kind = :kind), 0)
    """
)


def reversal_debt_to_bill(session: Session, account: Account) -> Amount:
    """What refunds and disputes left the account owing that no invoice bills yet.

    That is the ledger balance of ``receivable:reversals`` less what drafts already carry (a draft
    moves its share when it is finalized). The caller holds the account row, as every writer of that
    receivable does.
    """
    unit = currency_of(account)
    owed = session.scalar(
        _REVERSALS_UNBILLED,
        {"acc": account.id, "book": book_of(account), "unit": unit.code, "kind": REVERSAL_DEBT},
    )
    return Amount(max(int(owed or 0), 0), unit)


def _catalog_name(kind: str, item_id: str, session: Session) -> str:
    try:
        if kind == "plan":
            return get_plan(session, item_id).name
        return get_package(session, item_id).name
    except NotFound:
        return item_id


def collect_lines(
    session: Session,
    account: Account,
    period: Period,
    *,
    cutoff_at: datetime,
    previous_cutoff_at: datetime | None,
) -> list[DraftLine]:
    """Every line of the account's invoice for ``period`` (exact amounts, not yet rounded).

    Usage comes from the records of the account and (for a reseller) its sub-accounts: records
    that occurred in the period and were received at or before ``cutoff_at``, plus records of
    earlier periods received after ``previous_cutoff_at`` (late usage, labelled with their
    month). A reseller is billed its sub-accounts' usage at wholesale: what its float was drawn.
    Lines come in this order: plan fees, packages, overage, prepaid usage, failed-request
    credits, the refund and dispute debts (each built by invoicing/lines.py).
    """
    unit = currency_of(account)
    subs = session.scalars(select(Account.id).where(Account.parent_id == account.id))
    params = {
        "root": account.id,
        "tree": [account.id, *subs],
        "ps": period.start,
        "pe": period.end,
        "cut": cutoff_at,
        "prev": previous_cutoff_at,
    }
    since = {"acc": account.id, "pe": period.end}
    fees = [PlanFeeRow(**row._mapping) for row in session.execute(_PLAN_FEES, since)]
    plan_fees = [(fee, _catalog_name("plan", fee.plan_id, session)) for fee in fees]
    purchases = [PackageRow(**row._mapping) for row in session.execute(_PACKAGES, since)]
    packages = [(pkg, _catalog_name("package", pkg.package_id, session)) for pkg in purchases]
    rows = CloseRows(
        plan_fees=plan_fees,
        packages=packages,
        usage=[UsageGroup(**row._mapping) for row in session.execute(_USAGE, params)],
        credits=[CreditGroup(**row._mapping) for row in session.execute(_CREDITS, params)],
        reversal_debt=reversal_debt_to_bill(session, account),
    )
    return invoice_lines(rows, period, unit)


# -- one account -----------------------------------------------------------------------------


def _previous_cutoff(session: Session, account_id: str, period: Period) -> datetime | None:
    cutoff: datetime | None = session.scalar(
        select(func.max(Invoice.usage_cutoff_at)).where(
            Invoice.account_id == account_id, Invoice.period < str(period)
        )
    )
    return cutoff


def _priced(
    session: Session, account: Account, drafts: Sequence[DraftLine]
) -> tuple[BillingTerms, list[PricedLine], Totals]:
    """Round and tax the lines under the account's billing terms, and total them."""
    terms = billing_terms(session, account)
    priced: list[PricedLine] = [
        price_line(
            d.exact,
            d.settlement,
            terms.tax_rate_pct if d.taxed else None,
            taxable=d.taxable,
        )
        for d in drafts
    ]
    return terms, priced, totals(priced, currency_of(account))


def write_draft(
    session: Session,
    account: Account,
    period: Period,
    drafts: Sequence[DraftLine],
    *,
    cutoff_at: datetime,
    previous_cutoff_at: datetime | None,
) -> Invoice:
    """Round and tax the lines and store the draft invoice with them."""
    unit = currency_of(account)
    terms, priced, t = _priced(session, account, drafts)
    invoice = Invoice(
        id=new_id("inv"),
        account_id=account.id,
        period=str(period),
        period_start=period.start,
        period_end=period.end,
        currency=unit.code,
        status="draft",
        usage_cutoff_at=cutoff_at,
        previous_cutoff_at=previous_cutoff_at,
        bill_to=terms.bill_to,
        net_terms_days=terms.net_terms_days,
        tax_profile_id=terms.tax_profile_id,
        tax_rate_pct=terms.tax_rate_pct,
        subtotal=t.subtotal.atoms,
        tax=t.tax.atoms,
        total=t.total.atoms,
        prepaid_applied=t.prepaid_applied.atoms,
        amount_due=t.amount_due.atoms,
        exact_due=t.exact_due.atoms,
        rounding=t.rounding.atoms,
    )
    session.add(invoice)
    session.flush()
    session.add_all(
        InvoiceLine(
            invoice_id=invoice.id,
            position=i,
            **d.shown(),
            amount_exact=p.exact.atoms,
            amount=p.amount.atoms,
            tax_rate_pct=terms.tax_rate_pct if d.settlement != "info" and d.taxed else None,
            taxable=p.taxable.atoms,
            tax=p.tax.atoms,
            source_type=d.source_type,
            source_id=d.source_id,
            details=d.details,
        )
        for i, (d, p) in enumerate(zip(drafts, priced, strict=True), start=1)
    )
    session.flush()
    return invoice


def close_account(
    session: Session,
    account_id: str,
    period: Period,
    *,
    now: datetime | None = None,
    finalize: bool = True,
) -> Invoice | None:
    """Close ``period`` for one billing account in the caller's transaction.

    Returns the account's invoice for the period (the existing one on a re-run; a draft that a
    finalizing re-run finds is finalized), or None when the account had nothing to bill.

    Args:
        session: the caller's transaction.
        account_id: the billing account.
        period: the month to close.
        now: the cut-off and issue time; default the database clock under the usage gate.
        finalize: number and post the invoice now; False leaves a draft for review.

    Raises:
        NotFound: no such account.
        PeriodOrder: the account already has an invoice for a later period.
    """
    gate_at = enter_exclusive(session, account_id)
    # then the wallet's first row lock: the close moves the account's refund and dispute debts,
    # which refunds and disputes write under this lock
    account = lock_accounts(session, [account_id], with_parents=False).get(account_id)
    if account is None:
        raise NotFound(f"account {account_id} does not exist")
    existing = session.scalars(
        select(Invoice)
        .where(Invoice.account_id == account_id, Invoice.period == str(period))
        .with_for_update()
    ).one_or_none()
    if existing is not None:
        if finalize and existing.status == "draft":
            finalize_invoice(session, existing, now=now or gate_at)
        return existing
    later = session.scalar(
        select(Invoice.period)
        .where(Invoice.account_id == account_id, Invoice.period > str(period))
        .limit(1)
    )
    if later is not None:
        raise PeriodOrder(
            f"account {account_id} already has an invoice for {later};"
            f" usage of {period} that is not on an invoice yet goes to the next one"
        )
    cutoff = now or gate_at
    previous = _previous_cutoff(session, account_id, period)
    drafts = collect_lines(session, account, period, cutoff_at=cutoff, previous_cutoff_at=previous)
    if not drafts:
        return None
    invoice = write_draft(
        session, account, period, drafts, cutoff_at=cutoff, previous_cutoff_at=previous
    )
    if finalize:
        finalize_invoice(session, invoice, now=cutoff)
    return invoice


@dataclass(frozen=True, slots=True)
class Preview:
    """What the account's invoice for a period would be if it were closed at ``cutoff_at``.

    Its lines (each with its rounded, taxed money), totals and terms. Nothing is stored: no invoice,
    no number, no ledger entry.
    """

    account: Account
    period: Period
    cutoff_at: datetime
    previous_cutoff_at: datetime | None
    terms: BillingTerms
    lines: list[tuple[DraftLine, PricedLine]]
    totals: Totals


def preview_invoice(
    session: Session, account: Account, period: Period, *, now: datetime
) -> Preview:
    """The invoice ``close_account`` would write for ``period`` with ``now`` as the cut-off.

    Nothing is written and the usage gate is not taken: usage committed by then is counted, as a
    close at that instant would count it.

    Raises:
        NotABillingAccount: a reseller's sub-account (its usage is billed to the reseller).
        InvoiceExists: the period's invoice already exists (show it instead).
        InvalidPeriod: a period that has not started yet.
    """
    if account.parent_id is not None:
        raise NotABillingAccount(
            f"account {account.id} is a sub-account of {account.parent_id}; its usage is billed"
            " to the reseller at wholesale: preview the reseller's invoice"
        )
    if period.start > now:
        raise InvalidPeriod(f"period {period} has not started yet; nothing can be billed in it")
    existing = session.scalar(
        select(Invoice.id).where(Invoice.account_id == account.id, Invoice.period == str(period))
    )
    if existing is not None:
        raise InvoiceExists(
            f"the {period} invoice of account {account.id} exists already: {existing}"
            f" (GET /v1/invoices/{existing})",
            invoice_id=existing,
        )
    previous = _previous_cutoff(session, account.id, period)
    drafts = collect_lines(session, account, period, cutoff_at=now, previous_cutoff_at=previous)
    terms, priced, t = _priced(session, account, drafts)
    return Preview(
        account=account,
        period=period,
        cutoff_at=now,
        previous_cutoff_at=previous,
        terms=terms,
        lines=list(zip(drafts, priced, strict=True)),
        totals=t,
    )


# -- the period ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CloseResult:
    """What a close run did: the period, the invoices (ids) and how many accounts it saw."""

    period: Period
    invoice_ids: list[str]
    accounts: int
    status: str


#: ``progress(done, total, account_id)`` after each billing account.
Progress = Callable[[int, int, str], None]


def billing_account_ids(session: Session) -> list[str]:
    """Every billing account (top-level accounts), in id order."""
    return list(
        session.scalars(select(Account.id).where(Account.parent_id.is_(None)).order_by(Account.id))
    )


def check_closable(period: Period, *, now: datetime, grace: timedelta) -> None:
    """Refuse to close a period before it ended plus the grace period for late usage.

    Raises:
        PeriodNotEnded: too early.
    """
    opens_at = period.end + grace
    if now < opens_at:
        raise PeriodNotEnded(
            f"period {period} can be closed from {opens_at.isoformat()} (its end plus a"
            f" {grace} grace period for late usage); it is {now.isoformat()}"
        )


def close_period(
    factory: sessionmaker[Session],
    period: Period,
    *,
    now: datetime | None = None,
    grace: timedelta = timedelta(0),
    finalize: bool = True,
    progress: Progress | None = None,
) -> CloseResult:
    """Close ``period`` for every billing account, one transaction per account.

    Repeat-safe and crash-safe (see the module docstring). Two runs at once are harmless:
    each account's close takes its usage gate exclusively, so the second run of an account
    waits and then finds the first run's invoice.

    Raises:
        PeriodNotEnded: before ``period.end + grace``.
        PeriodOrder: a later period is already closed.
    """
    check_closable(period, now=now or utcnow(), grace=grace)
    with factory.begin() as s:
        later = s.scalar(
            select(BillingPeriod.period).where(BillingPeriod.period > str(period)).limit(1)
        )
        if later is not None:
            raise PeriodOrder(
                f"period {later} is already closed; {period} cannot be closed after it"
            )
        s.execute(
            insert(BillingPeriod)
            .values(period=str(period), status="closing", started_at=now or utcnow())
            .on_conflict_do_nothing(index_elements=["period"])
        )
        ids = billing_account_ids(s)
    invoice_ids: list[str] = []
    for done, account_id in enumerate(ids, start=1):
        with factory.begin() as s:
            invoice = close_account(s, account_id, period, now=now, finalize=finalize)
            if invoice is not None:
                invoice_ids.append(invoice.id)
        if progress is not None:
            progress(done, len(ids), account_id)
    with factory.begin() as s:
        row = s.get_one(BillingPeriod, str(period), with_for_update=True)
        count = s.scalar(
            select(func.count()).select_from(Invoice).where(Invoice.period == str(period))
        )
        if row.status != "closed":
            row.status, row.closed_at = "closed", now or utcnow()
        row.accounts, row.invoices = len(ids), int(count or 0)
    return CloseResult(period, invoice_ids, len(ids), "closed")


def due_period(now: datetime, grace: timedelta) -> Period | None:
    """The period the scheduler should close at ``now``.

    The previous month once its grace period has passed, else None.
    """
    previous = Period.containing(now).previous()
    return previous if now >= previous.end + grace else None


def close_due(
    session: Session, *, grace: timedelta, now: datetime | None = None
) -> CloseResult | None:
    """The scheduler job.

    Close the previous month once its grace period passed, unless that period is already closed.
    ``session`` holds the job's advisory lock; each account is closed in its own transaction on the
    same engine.
    """
    at = now or utcnow()
    period = due_period(at, grace)
    if period is None:
        return None
    status = session.scalar(select(BillingPeriod.status).where(BillingPeriod.period == str(period)))
    if status == "closed":
        return None
    factory = sessionmaker(bind=session.get_bind(), expire_on_commit=False, autoflush=False)
    return close_period(factory, period, now=now, grace=grace)
