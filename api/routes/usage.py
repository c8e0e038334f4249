"""``/v1/usage``: usage batches from gateways and the usage totals query.

The hot path: records in ``usage_records``, answers and the batcher runner in ``usage_results``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter
from pydantic import BaseModel
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.routes.usage_records import UsageBatchIn, parse_records
from api.routes.usage_results import (
    UsageBatchOut,
    results_out,
    run_operation,
)
from api.schemas import IdempotencyKey, Money, scope_of
from wallet.accounts import get_account
from wallet.errors import InvalidRequest
from wallet.gateway import (
    ChargeUsage,
)
from wallet.history import summed_usage
from wallet.ledger_accounts import currency_of


class UsageController(Controller):
    """``/v1/usage``: what a gateway reports after each call."""

    path = "/v1/usage"
    tags = ["gateway"]
    guards = [requires("gateway")]

    @post("/", status_code=200, responses={200: ResponseSpec(UsageBatchOut)})
    async def report(
        self,
        request: Request[Principal, Principal, State],
        data: UsageBatchIn,
        principal: Principal,
        state: State,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Charge a batch.

        Each record is ``charged``, ``duplicate`` (first result) or ``rejected`` (with a reason), in
        request order. A record that names a multi-capture authorization carries its state after the
        capture.
        """
        op = ChargeUsage(
            parse_records(data.records, await request.body()),
            scope_of(principal),
            timedelta(days=state.settings.tokenwallet_usage_retention_days),
        )
        return await run_operation(request, idempotency_key, op, body=data, render=results_out)


class UsageTotalsRow(BaseModel):
    """Rated totals for one group."""

    key: str
    records: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    rated: Money
    billed: Money
    credited: Money


class UsageTotals(BaseModel):
    """Usage of an account between two instants, grouped."""

    account_id: str
    group_by: str
    data: list[UsageTotalsRow]


@get(
    "/v1/accounts/{account_id:str}/usage",
    sync_to_thread=True,
    tags=["accounts"],
    guards=[requires("finance", "reseller", "customer", "gateway")],
)
def usage_totals(
    account_id: str,
    db: Session,
    principal: Principal,
    from_: Annotated[datetime | None, QueryParameter(name="from")] = None,
    to: datetime | None = None,
    group_by: Literal["model", "day", "reason"] = "model",
) -> UsageTotals:
    """Rated, billed and credited totals per model, day or reason code (``[from, to)``)."""
    for name, value in (("from", from_), ("to", to)):
        if value is not None and value.tzinfo is None:
            raise InvalidRequest(f"{name} must carry a UTC offset, e.g. 2026-11-01T00:00:00Z")
    account = get_account(db, account_id, scope=scope_of(principal))
    unit = currency_of(account)
    rows = summed_usage(db, account.id, group_by, since=from_, until=to)
    return UsageTotals(
        account_id=account.id,
        group_by=group_by,
        data=[
            UsageTotalsRow(
                key=r.key,
                records=r.n,
                input_tokens=int(r.i),
                output_tokens=int(r.o),
                cache_read_tokens=int(r.cr),
                cache_write_tokens=int(r.cw),
                rated=Money.atoms(int(r.rated), unit),
                billed=Money.atoms(int(r.billed), unit),
                credited=Money.atoms(int(r.credited), unit),
            )
            for r in rows
        ],
    )
