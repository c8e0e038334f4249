"""The gateway hot path: usage records and authorizations (holds), plus usage queries."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import QueryParameter
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.deps import now_of
from api.idempotency import run_idempotent
from api.schemas import IdempotencyKey, Money, scope_of
from ledger.amounts import Amount
from ledger.errors import DomainError
from wallet.accounts import get_account
from wallet.authorizations import authorize, void_authorization
from wallet.charging import MAX_BATCH, Rejected, UsageIn, charge_batch, parse_tokens
from wallet.chart import currency_of
from wallet.errors import InvalidRequest
from wallet.models import Authorization

NonNegative = Field(default=None, ge=0, le=10**12)


class UsageRecordIn(BaseModel):
    """One usage record: canonical token fields, or a provider's own usage object."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=200)
    account_id: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=200)
    occurred_at: AwareDatetime
    input_tokens: int | None = NonNegative
    output_tokens: int | None = NonNegative
    cache_read_tokens: int | None = NonNegative
    cache_write_5m_tokens: int | None = NonNegative
    cache_write_1h_tokens: int | None = NonNegative
    reasoning_tokens: int | None = NonNegative
    batch: bool = False
    http_status: int = Field(default=200, ge=100, le=599)
    finish_reason: str | None = Field(default=None, max_length=100)
    truncated: bool = False
    authorization_id: str | None = Field(default=None, max_length=64)
    tags: dict[str, str] = Field(default_factory=dict, max_length=50)
    openai_usage: dict[str, Any] | None = None
    anthropic_usage: dict[str, Any] | None = None


_RECORD = TypeAdapter(UsageRecordIn)
_TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
)


class UsageBatchIn(BaseModel):
    """Up to 1,000 records; each is validated on its own, so one bad record fails alone."""

    model_config = ConfigDict(extra="forbid")
    records: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH)


class UsageResultOut(BaseModel):
    """One record's outcome, in request order."""

    id: str
    status: Literal["charged", "duplicate", "rejected"]
    billed: Money | None = None
    credited: Money | None = None
    reason: str | None = None
    detail: str | None = None


class UsageBatchOut(BaseModel):
    """Results in request order."""

    results: list[UsageResultOut]


def _parse(index: int, raw: dict[str, Any]) -> UsageIn | Rejected:
    rid = raw.get("id") if isinstance(raw.get("id"), str) else f"#{index}"
    try:
        rec = _RECORD.validate_python(raw)
        fields = {k: getattr(rec, k) for k in _TOKEN_FIELDS if getattr(rec, k) is not None}
        if fields and (rec.openai_usage or rec.anthropic_usage):
            return Rejected(
                str(rid), "invalid_usage", "send token fields or a provider usage object, not both"
            )
        tokens = parse_tokens(
            fields=fields, openai_usage=rec.openai_usage, anthropic_usage=rec.anthropic_usage
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        return Rejected(str(rid), "validation_error", f"{where}: {first['msg']}")
    except DomainError as exc:
        return Rejected(str(rid), exc.code, exc.detail)
    return UsageIn(
        id=rec.id,
        account_id=rec.account_id,
        model=rec.model,
        occurred_at=rec.occurred_at,
        tokens=tokens,
        batch=rec.batch,
        http_status=rec.http_status,
        finish_reason=rec.finish_reason,
        truncated=rec.truncated,
        authorization_id=rec.authorization_id,
        tags=rec.tags,
    )


class AuthorizationIn(BaseModel):
    """Reserve the most a call can cost before making it."""

    model_config = ConfigDict(extra="forbid")
    account_id: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=200)
    estimated_input_tokens: int = Field(ge=0, le=10**9)
    max_output_tokens: int = Field(ge=0, le=10**9)
    ttl_seconds: int | None = Field(default=None, ge=1, le=86_400)


class AuthorizationOut(BaseModel):
    """``held`` is money, or ``{"tokens": n}`` when a package covers the call."""

    id: str
    account_id: str
    status: str
    held: Money | dict[str, int] | None
    expires_at: datetime
    decline_code: str | None = None


def authorization_out(a: Authorization, session: Session) -> AuthorizationOut:
    """Wire form of an authorization."""
    held: Money | dict[str, int] | None = None
    if a.status != "declined":
        if a.held_money:
            unit = currency_of(get_account(session, a.account_id))
            held = Money.of(Amount(a.held_money, unit))
        elif a.held_tokens:
            held = {"tokens": a.held_tokens}
        else:
            held = {"tokens": 0}
    return AuthorizationOut(
        id=a.id,
        account_id=a.account_id,
        status=a.status,
        held=held,
        expires_at=a.expires_at,
        decline_code=a.decline_code,
    )


class UsageController(Controller):
    """``/v1/usage``: what a gateway reports after each call."""

    path = "/v1/usage"
    tags = ["gateway"]
    guards = [requires("gateway")]

    @post("/", sync_to_thread=True, status_code=200)
    def report(
        self,
        request: Request[Principal, Principal, State],
        data: UsageBatchIn,
        db: Session,
        principal: Principal,
        state: State,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Charge a batch; each record is ``charged``, ``duplicate`` (first result) or
        ``rejected`` (with a reason), in request order."""
        retention = timedelta(days=state.settings.tokenwallet_usage_retention_days)

        def produce() -> UsageBatchOut:
            parsed = [_parse(i, raw) for i, raw in enumerate(data.records)]
            results = charge_batch(
                db,
                parsed,
                now=now_of(request.app.state),
                scope=scope_of(principal),
                retention=retention,
            )
            return UsageBatchOut(
                results=[
                    UsageResultOut(
                        id=r.id,
                        status=r.status,
                        billed=Money.of(r.billed) if r.billed is not None else None,
                        credited=Money.of(r.credited) if r.credited is not None else None,
                        reason=r.reason,
                        detail=r.detail,
                    )
                    for r in results
                ]
            )

        return run_idempotent(
            db, request, idempotency_key, body=data, status_code=200, produce=produce
        )


class AuthorizationsController(Controller):
    """``/v1/authorizations``: holds before a call."""

    path = "/v1/authorizations"
    tags = ["gateway"]
    guards = [requires("gateway")]

    @post("/", sync_to_thread=True, status_code=201)
    def create(
        self,
        request: Request[Principal, Principal, State],
        data: AuthorizationIn,
        db: Session,
        principal: Principal,
        state: State,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Approve (reserving the estimate) or decline with a ``decline_code``."""
        ttl = data.ttl_seconds or state.settings.tokenwallet_hold_ttl_seconds

        def produce() -> AuthorizationOut:
            a = authorize(
                db,
                account_id=data.account_id,
                model=data.model,
                estimated_input_tokens=data.estimated_input_tokens,
                max_output_tokens=data.max_output_tokens,
                ttl=timedelta(seconds=ttl),
                scope=scope_of(principal),
            )
            return authorization_out(a, db)

        return run_idempotent(
            db, request, idempotency_key, body=data, status_code=201, produce=produce
        )

    @post("/{authorization_id:str}/void", sync_to_thread=True, status_code=200)
    def void(
        self,
        request: Request[Any, Any, Any],
        authorization_id: str,
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Release a hold now (repeat-safe)."""

        def produce() -> AuthorizationOut:
            a = void_authorization(db, authorization_id, scope=scope_of(principal))
            return authorization_out(a, db)

        return run_idempotent(
            db, request, idempotency_key, body=None, status_code=200, produce=produce
        )


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


_GROUPS = {
    "model": "model",
    "day": "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "reason": "coalesce(reason, 'billed')",
}


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
    rows = db.execute(
        text(
            f"SELECT {_GROUPS[group_by]} AS key, count(*) AS n, sum(input_tokens) AS i,"  # noqa: S608
            " sum(output_tokens) AS o, sum(cache_read_tokens) AS cr,"
            " sum(cache_write_5m_tokens + cache_write_1h_tokens) AS cw,"
            " sum(rated) AS rated, sum(billed) AS billed, sum(credited) AS credited"
            " FROM wallet_usage_records WHERE account_id = :a"
            " AND (CAST(:f AS timestamptz) IS NULL OR occurred_at >= :f)"
            " AND (CAST(:t AS timestamptz) IS NULL OR occurred_at < :t)"
            " GROUP BY 1 ORDER BY 1"
        ),
        {"a": account.id, "f": from_, "t": to},
    ).all()
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
                rated=Money.of(Amount(int(r.rated), unit)),
                billed=Money.of(Amount(int(r.billed), unit)),
                credited=Money.of(Amount(int(r.credited), unit)),
            )
            for r in rows
        ],
    )
