"""Finance reports as JSON (default) or CSV (``format=csv``).

Trial balance, prepaid-liability rollforward, revenue by model, receivables aging, reseller
statements.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from litestar import Controller, Response, get
from litestar.datastructures import State
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.deps import now_of
from api.schemas import scope_of
from invoicing.periods import Period
from invoicing.reports import (
    Report,
    margin,
    prepaid_liability,
    receivables_aging,
    reseller_statement,
    revenue_by_model,
    trial_balance,
)
from ledger.base import utcnow
from ledger.models import OPERATOR_BOOK
from ledger.units import unit
from wallet.accounts import get_account

Format = Literal["json", "csv"]


def _respond(report: Report, fmt: Format) -> Response[Any]:
    if fmt == "csv":
        return Response(
            report.to_csv(),
            media_type="text/csv",  # Litestar adds "; charset=utf-8" to text types
            headers={"Content-Disposition": f'attachment; filename="{report.name}.csv"'},
        )
    return Response(report.to_json(), media_type="application/json")


def _now(state: State) -> datetime:
    return now_of(state) or utcnow()


def _snapshot(db: Session) -> None:
    """Read the whole report from one snapshot (its checks compare figures of several queries)."""
    db.connection(execution_options={"isolation_level": "REPEATABLE READ"})


class ReportsController(Controller):
    """``/v1/reports`` (finance; a reseller may read its own statement)."""

    path = "/v1/reports"
    tags = ["reports"]
    opt = {"media_types": {"text/csv": "with format=csv"}}  # documented by api.openapi

    @get("/trial-balance", sync_to_thread=True, guards=[requires("finance")])
    def trial_balance(
        self,
        db: Session,
        state: State,
        currency: str,
        as_of: datetime | None = None,
        format: Format = "json",
    ) -> Response[Any]:
        """Debits and credits per book and account code as of a moment (accounting time).

        Every book sums to zero.
        """
        unit(currency)
        _snapshot(db)
        return _respond(trial_balance(db, currency=currency, as_of=as_of or _now(state)), format)

    @get("/prepaid-liability", sync_to_thread=True, guards=[requires("finance")])
    def prepaid_liability(
        self,
        db: Session,
        period: str,
        currency: str,
        book: str = OPERATOR_BOOK,
        format: Format = "json",
    ) -> Response[Any]:
        """The prepaid credit of a month, from opening to closing; opening + movements = closing.

        The movements are purchased, bonus granted, consumed, expired, refunded, credited and
        other.
        """
        _snapshot(db)
        report = prepaid_liability(db, period=Period.parse(period), currency=currency, book=book)
        return _respond(report, format)

    @get("/revenue-by-model", sync_to_thread=True, guards=[requires("finance")])
    def revenue_by_model(
        self, db: Session, period: str, currency: str, format: Format = "json"
    ) -> Response[Any]:
        """Usage revenue per model for a month, with the ledger's revenue accounts beside it."""
        _snapshot(db)
        return _respond(
            revenue_by_model(db, period=Period.parse(period), currency=currency), format
        )

    @get("/margin", sync_to_thread=True, guards=[requires("finance")])
    def margin(
        self,
        db: Session,
        period: str,
        currency: str,
        group_by: Literal["model", "upstream", "account", "day"] = "model",
        format: Format = "json",
    ) -> Response[Any]:
        """Revenue, upstream cost and margin of a month's usage by model, upstream, account or day.

        Each record's cost is its upstream's cost card in force when it occurred; ``summary.ties``:
        the revenue is ``revenue:usage`` in the ledger.
        """
        _snapshot(db)
        report = margin(db, period=Period.parse(period), currency=currency, group_by=group_by)
        return _respond(report, format)

    @get("/receivables-aging", sync_to_thread=True, guards=[requires("finance")])
    def receivables_aging(
        self,
        db: Session,
        state: State,
        currency: str,
        as_of: date | None = None,
        format: Format = "json",
    ) -> Response[Any]:
        """Open invoices by days past due, and refund and dispute debts not invoiced yet.

        The buckets are current, 1-30, 31-60, 61-90 and 90+ days, as of the end of ``as_of``
        (UTC).
        """
        _snapshot(db)
        return _respond(
            receivables_aging(db, currency=currency, as_of=as_of or _now(state).date()), format
        )

    @get("/reseller-statement", sync_to_thread=True, guards=[requires("finance", "reseller")])
    def reseller_statement(
        self,
        db: Session,
        principal: Principal,
        reseller_id: str,
        period: str,
        format: Format = "json",
    ) -> Response[Any]:
        """Retail billed to the reseller's sub-accounts, wholesale charged, and the margin."""
        get_account(db, reseller_id, scope=scope_of(principal))
        return _respond(
            reseller_statement(db, reseller_id=reseller_id, period=Period.parse(period)), format
        )
