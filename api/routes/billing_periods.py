"""Month end: closing a billing period and its status."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from api.audit import record_request
from api.auth import Principal, requires
from api.deps import now_of
from api.routes.invoices import InvoiceOut, invoice_out, today_of
from api.schemas import IdempotencyKey
from invoicing.close import close_period
from invoicing.models import BillingPeriod
from invoicing.periods import Period
from invoicing.queries import period_invoices


class CloseIn(BaseModel):
    """``finalize: false`` leaves drafts for review (a later close finalizes them)."""

    model_config = ConfigDict(extra="forbid")
    finalize: bool = True


class CloseOut(BaseModel):
    """The period's invoices after the close (repeat-safe: a repeat returns the same ones)."""

    period: str
    status: str
    accounts: int
    invoices: list[InvoiceOut]


class BillingPeriodsController(Controller):
    """``/v1/billing-periods``: the month-end close (finance)."""

    path = "/v1/billing-periods"
    tags = ["month end"]
    guards = [requires("finance")]

    @post("/{period:str}/close", sync_to_thread=True, status_code=200)
    def close(
        self,
        request: Request[Any, Any, Any],
        period: str,
        db: Session,
        state: State,
        principal: Principal,
        data: CloseIn | None = None,
        idempotency_key: IdempotencyKey = None,
    ) -> CloseOut:
        """Close a month for every billing account.

        One invoice per account and period, numbered without gaps. Safe to repeat and to run after a
        crash; refused (409) before the month ended plus the grace period for late usage. The close
        commits account by account, so it is repeat-safe by construction: an ``Idempotency-Key`` is
        accepted, and a repeat (with or without one) answers with the period's invoices as they are.
        """
        del idempotency_key
        p = Period.parse(period)
        cfg = state.settings
        result = close_period(
            state.sessionmaker,
            p,
            now=now_of(state),
            grace=timedelta(hours=cfg.tokenwallet_billing_grace_hours),
            finalize=data.finalize if data is not None else True,
        )
        record_request(
            db,
            request,
            principal,
            action="billing.close",
            target_type="billing_period",
            target_id=str(p),
            changes={
                "finalize": data.finalize if data is not None else True,
                "status": result.status,
                "invoices": len(result.invoice_ids),
            },
        )
        today = today_of(state)
        return CloseOut(
            period=str(p),
            status=result.status,
            accounts=result.accounts,
            invoices=[
                invoice_out(db, i, today=today, full=False) for i in period_invoices(db, str(p))
            ],
        )

    @get("/{period:str}", sync_to_thread=True)
    def status(self, period: str, db: Session) -> dict[str, Any]:
        """Whether the period is being closed or closed, and how many invoices it has."""
        p = Period.parse(period)
        row = db.get(BillingPeriod, str(p))
        if row is None:
            return {"period": str(p), "status": "open", "accounts": 0, "invoices": 0}
        return {
            "period": row.period,
            "status": row.status,
            "started_at": row.started_at.isoformat(),
            "closed_at": row.closed_at.isoformat() if row.closed_at else None,
            "accounts": row.accounts,
            "invoices": row.invoices,
        }
