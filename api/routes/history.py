"""An account's history.

Usage records, its statement of ledger movements, and a preview of the invoice of a period that is
not closed yet. Lists are keyset paged (``starting_after`` = the last item's id, ``has_more``) and
filtered by a time range (``from`` inclusive, ``to`` exclusive, RFC 3339 with an offset).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Controller, get
from litestar.datastructures import State
from litestar.params import QueryParameter
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.deps import now_of
from api.routes.catalog import PriceQuoteOut, quote_out
from api.routes.invoices import LineOut, TotalsOut
from api.schemas import Limit, Money, Page, scope_of
from api.timefilters import IntCursor, UnknownCursor, aware
from invoicing.close import Preview, preview_invoice
from invoicing.periods import Period
from invoicing.queries import database_now
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.decimals import format_pct as _pct
from ledger.errors import DomainError
from ledger.models import AccountType
from ledger.units import unit as unit_of
from plans import catalog
from plans.price_context import PriceContext, standing_contract
from wallet.accounts import get_account
from wallet.history import UsageFilter, statement_page, usage_cursor, usage_page
from wallet.ledger_accounts import currency_of

From = Annotated[
    datetime | None,
    QueryParameter(name="from", description="from this instant on (inclusive, with offset)"),
]
To = Annotated[datetime | None, QueryParameter(description="before this instant (exclusive)")]

#: the ledger accounts a wallet account owns (``ledger-movements?ledger_account=``)
LedgerCode = Literal[
    "customer:prepaid",
    "customer:bonus",
    "customer:package_tokens",
    "deferred:packages",
    "deferred:subscriptions",
    "receivable:unbilled",
    "receivable:invoiced",
    "receivable:reversals",
]

#: money keys of a record's ``drawn`` (the others count tokens or requests)
_MONEY_SOURCES = ("bonus", "paid", "overage")


# -- usage records ---------------------------------------------------------------------------


class UsageTokensOut(BaseModel):
    """Token counts of a record."""

    input: int
    output: int
    cache_read: int
    cache_write_5m: int
    cache_write_1h: int
    reasoning: int


class UsageRecordOut(BaseModel):
    """A charged usage record.

    What it was rated, billed and credited, and what paid for it (``drawn``: money from bonus, paid
    credit and overage; package tokens and plan requests as counts). ``wholesale_billed``: for a
    reseller's sub-account, what the reseller's float was charged (shown to the reseller and finance
    only).
    """

    id: str
    account_id: str
    model: str
    occurred_at: datetime
    received_at: datetime
    tokens: UsageTokensOut
    batch: bool
    http_status: int
    finish_reason: str | None
    failure_kind: str | None
    price_source: str
    rated: Money
    billed: Money
    credited: Money
    reason: str | None
    drawn: dict[str, Money | int]
    authorization_id: str | None
    tags: dict[str, Any]
    wholesale_billed: Money | None = None


def _drawn(drawn: dict[str, Any], unit: Any) -> dict[str, Money | int]:
    out: dict[str, Money | int] = {}
    for key, value in (drawn or {}).items():
        out[key] = Money.atoms(int(value), unit) if key in _MONEY_SOURCES else int(value)
    return out


def _usage_record_out(r: Any, unit: Any, *, show_wholesale: bool) -> UsageRecordOut:
    """Wire form of a usage record row; its wholesale price only when ``show_wholesale``."""
    return UsageRecordOut(
        id=r.id,
        account_id=r.account_id,
        model=r.model,
        occurred_at=r.occurred_at,
        received_at=r.received_at,
        tokens=UsageTokensOut(
            input=r.input_tokens,
            output=r.output_tokens,
            cache_read=r.cache_read_tokens,
            cache_write_5m=r.cache_write_5m_tokens,
            cache_write_1h=r.cache_write_1h_tokens,
            reasoning=r.reasoning_tokens,
        ),
        batch=r.batch,
        http_status=r.http_status,
        finish_reason=r.finish_reason,
        failure_kind=r.failure_kind,
        price_source=r.price_source,
        rated=Money.atoms(int(r.rated), unit),
        billed=Money.atoms(int(r.billed), unit),
        credited=Money.atoms(int(r.credited), unit),
        reason=r.reason,
        drawn=_drawn(r.drawn, unit),
        authorization_id=r.authorization_id,
        tags=r.tags or {},
        wholesale_billed=Money.atoms(int(r.wholesale_billed), unit)
        if show_wholesale and r.wholesale_billed is not None
        else None,
    )


# -- statement -------------------------------------------------------------------------------


class StatementLineOut(BaseModel):
    """One movement of one of the account's ledger accounts (a posting).

    ``change`` is the effect on that account's balance (positive: it grew); ``debit``/``credit`` the
    posting itself. ``phase``: ``posted``, or ``pending``/``release`` for credit held by a dispute.
    """

    id: int
    entry_id: int
    effective_at: datetime
    recorded_at: datetime
    ledger_account: str
    unit: str
    debit: str
    credit: str
    change: str
    phase: str
    kind: str
    description: str


_PHASES = {0: "posted", 1: "pending", 2: "release"}


def _statement_line_out(r: Any) -> StatementLineOut:
    """Wire form of a posting row: its debit or credit, and its effect on the balance."""
    unit = unit_of(r.unit)
    atoms = int(r.amount)
    change = atoms if AccountType(r.type).debit_normal else -atoms
    return StatementLineOut(
        id=r.id,
        entry_id=r.entry_id,
        effective_at=r.effective_at,
        recorded_at=r.created_at,
        ledger_account=r.code,
        unit=r.unit,
        debit=Amount(max(atoms, 0), unit).format(),
        credit=Amount(max(-atoms, 0), unit).format(),
        change=Amount(change, unit).format(),
        phase=_PHASES.get(r.phase, str(r.phase)),
        kind=r.kind,
        description=r.description,
    )


# -- invoice preview -------------------------------------------------------------------------


class PreviewLineOut(LineOut):
    """A line of the preview, as the invoice would have it (see ``InvoiceLineOut``)."""


class InvoicePreviewOut(BaseModel):
    """What the account's invoice for ``period`` would be if the period were closed now.

    ``usage_cutoff_at``. A draft that is not stored: no id, no number, nothing posted; the real
    invoice is made by the close after the period ends.
    """

    account_id: str
    period: str
    status: str = Field(default="preview", description="always ``preview``")
    number: None = None
    currency: str
    usage_cutoff_at: datetime
    previous_cutoff_at: datetime | None
    net_terms_days: int
    tax_rate_pct: str | None
    bill_to: dict[str, Any]
    totals: TotalsOut
    lines: list[PreviewLineOut]


def _preview_totals(t: Any, unit: Any) -> TotalsOut:
    """A preview's totals as an unpaid invoice's: nothing paid, credited or disputed yet."""
    zero = Money.of(Amount.zero(unit))
    return TotalsOut(
        subtotal=Money.of(t.subtotal),
        tax=Money.of(t.tax),
        total=Money.of(t.total),
        prepaid_applied=Money.of(t.prepaid_applied),
        amount_due=Money.of(t.amount_due),
        amount_paid=zero,
        credited=zero,
        balance_due=Money.of(t.amount_due),
        rounding=Money.of(t.rounding),
        disputed=zero,
    )


def _preview_lines(pv: Preview) -> list[PreviewLineOut]:
    """A preview's lines, numbered from 1; informational lines carry no tax rate."""
    rate = _pct(pv.terms.tax_rate_pct)
    return [
        PreviewLineOut(
            position=i,
            **d.shown(),
            amount=Money.of(priced.amount),
            amount_exact=Money.of(priced.exact),
            tax=Money.of(priced.tax),
            tax_rate_pct=rate if d.settlement != "info" and d.taxed else None,
            taxable=Money.of(priced.taxable),
            details=d.details,
        )
        for i, (d, priced) in enumerate(pv.lines, start=1)
    ]


class AccountHistoryController(Controller):
    """Account history: usage records, ledger movements, prices and the invoice preview."""

    path = "/v1/accounts/{account_id:str}"
    tags = ["accounts"]

    @get(
        "/usage-records",
        sync_to_thread=True,
        guards=[requires("finance", "reseller", "customer", "gateway")],
        opt={"problems": (422,)},  # unknown_cursor
    )
    def usage_records(
        self,
        account_id: str,
        db: Session,
        principal: Principal,
        from_: From = None,
        to: To = None,
        model: str | None = None,
        reason: str | None = None,
        authorization_id: str | None = None,
        limit: Limit = 20,
        starting_after: str | None = None,
    ) -> Page[UsageRecordOut]:
        """The account's charged usage records by ``occurred_at`` (then id).

        Filtered by time, model, ``reason`` (a credit reason code, or ``billed`` for records
        billed in full) and authorization. Rejected records are not stored (never charged).
        """
        account = get_account(db, account_id, scope=scope_of(principal))
        unit = currency_of(account)
        after = None
        if starting_after:
            after_at = usage_cursor(db, account.id, starting_after)
            if after_at is None:
                raise UnknownCursor(
                    f"starting_after {starting_after!r} is not a usage record of this account;"
                    " pass the id of the last record of the previous page"
                )
            after = (after_at, starting_after)
        rows = usage_page(
            db,
            account.id,
            UsageFilter(
                since=aware("from", from_),
                until=aware("to", to),
                model=model,
                reason=reason,
                authorization_id=authorization_id,
            ),
            after=after,
            limit=limit,
        )
        show_wholesale = principal.has_role("finance", "reseller")
        return Page[UsageRecordOut].of(
            rows, limit, lambda r: _usage_record_out(r, unit, show_wholesale=show_wholesale)
        )

    @get(
        "/ledger-movements",
        sync_to_thread=True,
        guards=[requires("finance", "reseller", "customer")],
    )
    def ledger_movements(
        self,
        account_id: str,
        db: Session,
        principal: Principal,
        from_: From = None,
        to: To = None,
        ledger_account: LedgerCode | None = None,
        limit: Limit = 50,
        starting_after: IntCursor = None,
    ) -> Page[StatementLineOut]:
        """Every movement of the account's own ledger accounts, oldest first.

        Those accounts hold paid and bonus credit, package tokens, deferred revenue of its
        purchases and what it owes. Filtered by accounting time (``from``/``to`` on the entry's
        ``effective_at``) and ledger account code (``customer:prepaid``...). A usage batch is
        one movement per ledger account.
        """
        account = get_account(db, account_id, scope=scope_of(principal))
        rows = statement_page(
            db,
            account.id,
            ledger_account,
            since=aware("from", from_),
            until=aware("to", to),
            after=starting_after,
            limit=limit,
        )
        return Page[StatementLineOut].of(rows, limit, _statement_line_out)

    @get(
        "/prices",
        sync_to_thread=True,
        guards=[requires("finance", "reseller", "customer", "gateway")],
    )
    def prices(
        self,
        account_id: str,
        db: Session,
        principal: Principal,
        at: datetime | None = None,
    ) -> list[PriceQuoteOut]:
        """The account's effective price of every model it can use at ``at`` (default now).

        Its contract or standing discounts, its reseller's retail price, else the list price; models
        nothing prices then are left out. A sub-account's wholesale price is shown to finance and
        its reseller only.
        """
        account = get_account(db, account_id, scope=scope_of(principal))
        when = aware("at", at) or utcnow()
        ids = [account.id] + ([account.parent_id] if account.parent_id else [])
        ctx = PriceContext.load(db, account.currency, account_ids=ids)
        standing = standing_contract(account.id, account.discounts) if account.discounts else None
        show_wholesale = principal.has_role("finance", "reseller")
        out: list[PriceQuoteOut] = []
        after: str | None = None
        while True:
            page = catalog.list_models(db, limit=100, starting_after=after)
            for m in page.items:
                try:
                    resolved = ctx.resolve(
                        model=m.id,
                        at=when,
                        account_id=account.id,
                        reseller_account_id=account.parent_id,
                        standing=standing,
                    )
                except DomainError:
                    continue  # not priced for this account at that instant
                quote = quote_out(resolved)
                if not show_wholesale:
                    quote.wholesale = None
                out.append(quote)
            if not page.has_more or not page.items:
                return out
            after = page.items[-1].id

    @get(
        "/invoice-preview",
        sync_to_thread=True,
        guards=[requires("finance", "reseller", "customer")],
        opt={"problems": (409,)},  # invoice_exists
    )
    def invoice_preview(
        self,
        account_id: str,
        db: Session,
        principal: Principal,
        state: State,
        period: str | None = None,
    ) -> InvoicePreviewOut:
        """The invoice the account would get for ``period`` if it were closed now.

        ``period`` is ``YYYY-MM`` (default the current month); lines, tax and totals are as the
        close computes them. Not stored, not numbered, nothing posted; the invoice of a period
        that is already closed answers 409 ``invoice_exists`` with its id.
        """
        account = get_account(db, account_id, scope=scope_of(principal))
        now = now_of(state) or database_now(db)
        p = Period.parse(period) if period else Period.containing(now)
        pv = preview_invoice(db, account, p, now=now)
        unit = currency_of(account)
        return InvoicePreviewOut(
            account_id=account.id,
            period=str(p),
            currency=unit.code,
            usage_cutoff_at=pv.cutoff_at,
            previous_cutoff_at=pv.previous_cutoff_at,
            net_terms_days=pv.terms.net_terms_days,
            tax_rate_pct=_pct(pv.terms.tax_rate_pct),
            bill_to=pv.terms.bill_to,
            totals=_preview_totals(pv.totals, unit),
            lines=_preview_lines(pv),
        )
