"""The gateway hot path: usage records and authorizations, plus usage queries.

Usage reports and authorization calls are async handlers that hand their operation to the
process's :class:`api.batcher.Batcher` (group commit); no session or thread is taken per
request. A call that carries an ``Idempotency-Key`` runs on its own through
:func:`api.idempotency.run_idempotent`, so a retry returns the first response.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.batcher import Batcher
from api.boundary import check_record, is_clean_line
from api.deps import now_of
from api.idempotency import run_idempotent
from api.openapi import only
from api.routes.catalog import ModelPriceOut, price_out
from api.schemas import IdempotencyKey, Money, scope_of
from ledger.amounts import Amount
from ledger.errors import DomainError
from wallet.accounts import get_account
from wallet.authorizations import get_authorization
from wallet.charging import MAX_BATCH, parse_tokens
from wallet.chart import currency_of
from wallet.errors import InvalidRequest
from wallet.gateway import (
    AuthorizationView,
    Authorize,
    ChargeUsage,
    Grant,
    Increment,
    Operation,
    OperationResult,
    Release,
    UsageResult,
    run_one,
)
from wallet.records import Rejected, UsageIn

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


_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_AccountId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=10**12)]


class _Record(msgspec.Struct, forbid_unknown_fields=True):
    """:class:`UsageRecordIn` as the hot path checks it (msgspec: a few microseconds a record,
    strict types, same limits)."""

    id: _Id
    account_id: _AccountId
    model: _Id
    occurred_at: Annotated[datetime, msgspec.Meta(tz=True)]
    input_tokens: _Count | None = None
    output_tokens: _Count | None = None
    cache_read_tokens: _Count | None = None
    cache_write_5m_tokens: _Count | None = None
    cache_write_1h_tokens: _Count | None = None
    reasoning_tokens: _Count | None = None
    batch: bool = False
    http_status: Annotated[int, msgspec.Meta(ge=100, le=599)] = 200
    finish_reason: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    truncated: bool = False
    authorization_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    tags: Annotated[dict[str, str], msgspec.Meta(max_length=50)] = {}
    openai_usage: dict[str, Any] | None = None
    anthropic_usage: dict[str, Any] | None = None


def _problem_of(exc: msgspec.ValidationError) -> str:
    """``field: message`` from msgspec's ``message - at `$.field` ``."""
    message, _, where = str(exc).rpartition(" - at `$.")
    if not message:
        return str(exc)
    return f"{where.rstrip('`')}: {message}"


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


class GrantState(BaseModel):
    """A multi-capture authorization's state after a record captured from it."""

    id: str
    status: str
    held: Money | dict[str, int]
    captured: Money | dict[str, int]
    remaining: Money | dict[str, int]
    final: bool


class UsageResultOut(BaseModel):
    """One record's outcome, in request order."""

    id: str
    status: Literal["charged", "duplicate", "rejected"]
    billed: Money | None = None
    credited: Money | None = None
    reason: str | None = None
    detail: str | None = None
    authorization: GrantState | None = None


class UsageBatchOut(BaseModel):
    """Results in request order."""

    results: list[UsageResultOut]


def _parse(index: int, raw: dict[str, Any]) -> UsageIn | Rejected:
    rid = raw.get("id") if is_clean_line(raw.get("id")) else f"#{index}"
    try:
        check_record(raw, index)
        rec = msgspec.convert(raw, _Record)
        fields = {k: getattr(rec, k) for k in _TOKEN_FIELDS if getattr(rec, k) is not None}
        if fields and (rec.openai_usage or rec.anthropic_usage):
            return Rejected(
                str(rid), "invalid_usage", "send token fields or a provider usage object, not both"
            )
        tokens = parse_tokens(
            fields=fields, openai_usage=rec.openai_usage, anthropic_usage=rec.anthropic_usage
        )
    except msgspec.ValidationError as exc:
        return Rejected(str(rid), "validation_error", _problem_of(exc))
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


def _parse_all(records: Sequence[dict[str, Any]]) -> tuple[UsageIn | Rejected, ...]:
    return tuple(_parse(i, raw) for i, raw in enumerate(records))


# -- wire forms (plain dicts: the hot path encodes them with msgspec) ----------------------------


def _money(atoms: int | None, amount_of: Amount) -> dict[str, str] | None:
    if atoms is None:
        return None
    return {"amount": Amount(atoms, amount_of.unit).format(), "currency": amount_of.unit.code}


def _amount(atoms: int, view: AuthorizationView) -> dict[str, Any]:
    if view.token_grant:
        return {"tokens": atoms}
    return {"amount": Amount(atoms, view.currency).format(), "currency": view.currency.code}


def _grant_state(view: AuthorizationView) -> dict[str, Any]:
    return {
        "id": view.id,
        "status": view.status,
        "held": _amount(view.granted, view),
        "captured": _amount(view.captured, view),
        "remaining": _amount(view.remaining, view),
        "final": view.final,
    }


def _result_out(r: UsageResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": r.id,
        "status": r.status,
        "billed": None,
        "credited": None,
        "reason": r.reason,
        "detail": r.detail,
    }
    if r.billed is not None:
        out["billed"] = {"amount": r.billed.format(), "currency": r.billed.unit.code}
    if r.credited is not None:
        out["credited"] = {"amount": r.credited.format(), "currency": r.credited.unit.code}
    if r.authorization is not None:
        out["authorization"] = _grant_state(r.authorization)
    return out


def _results_out(results: Sequence[UsageResult]) -> dict[str, Any]:
    return {"results": [_result_out(r) for r in results]}


class AuthorizationOut(BaseModel):
    """An authorization. ``held``: what was granted (money, or ``{"tokens": n}`` when package
    tokens cover it); ``captured``: what usage records took from it; ``remaining``: what it
    still reserves; ``final``: the account could give no more than this."""

    id: str
    account_id: str
    status: Literal["approved", "declined", "captured", "voided", "expired"]
    multi_capture: bool
    model: str | None
    held: Money | dict[str, int] | None
    captured: Money | dict[str, int]
    remaining: Money | dict[str, int]
    final: bool
    expires_at: datetime
    decline_code: str | None = None
    price: ModelPriceOut | None = None
    granted: Money | dict[str, int] | None = Field(
        default=None, description="increments: what this call added"
    )
    usage: UsageBatchOut | None = Field(
        default=None, description="increments: the results of the records sent with it"
    )


def authorization_out(view: AuthorizationView) -> dict[str, Any]:
    """Wire form of an authorization."""
    held: dict[str, Any] | None
    if view.multi_capture:
        held = _amount(view.granted, view)
        captured, remaining = _amount(view.captured, view), _amount(view.remaining, view)
    else:
        money = Amount.zero(view.currency)
        held = None
        if view.status != "declined":
            held = (
                _money(view.held_money, money) if view.held_money else {"tokens": view.held_tokens}
            )
        captured = _money(view.captured_money, money) or {}
        remaining = _money(view.remaining, money) or {}
    out: dict[str, Any] = {
        "id": view.id,
        "account_id": view.account_id,
        "status": view.status,
        "multi_capture": view.multi_capture,
        "model": view.model,
        "held": held,
        "captured": captured,
        "remaining": remaining,
        "final": view.final,
        "expires_at": view.expires_at.isoformat(),
        "decline_code": view.decline_code,
    }
    if view.price is not None and view.model is not None:
        out["price"] = price_out(view.model, view.price).model_dump()
    if view.granted_now is not None:
        out["granted"] = _amount(view.granted_now, view)
    if view.usage is not None:
        out["usage"] = _results_out(view.usage)
    return out


_ENCODER = msgspec.json.Encoder()


def _json(status: int, body: Any) -> Response[bytes]:
    return Response(_ENCODER.encode(body), status_code=status, media_type="application/json")


async def _run(
    request: Request[Any, Any, Any],
    key: str | None,
    op: Operation,
    *,
    body: Any,
    status: int,
    render: Callable[[Any], Any],
) -> Response[bytes]:
    """Run one gateway operation: grouped with concurrent calls, or alone with its
    Idempotency-Key (a replay returns the first response)."""
    if key is not None:
        return await _run_keyed(request, key, op, body=body, status=status, render=render)
    batcher: Batcher = request.app.state.batcher
    result: OperationResult = await batcher.run(op)
    if isinstance(result, DomainError):
        raise result
    return _json(status, render(result))


async def _run_keyed(
    request: Request[Any, Any, Any],
    key: str,
    op: Operation,
    *,
    body: Any,
    status: int,
    render: Callable[[Any], Any],
) -> Response[bytes]:
    import anyio

    state = request.app.state

    def work() -> Response[bytes]:
        with state.sessionmaker() as db:
            return run_idempotent(
                db,
                request,
                key,
                body=body,
                status_code=status,
                produce=lambda: render(run_one(db, op, now=now_of(state))),
            )

    return await anyio.to_thread.run_sync(work)


# -- usage ---------------------------------------------------------------------------------------


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
        """Charge a batch; each record is ``charged``, ``duplicate`` (first result) or
        ``rejected`` (with a reason), in request order. A record that names a multi-capture
        authorization carries its state after the capture."""
        op = ChargeUsage(
            _parse_all(data.records),
            scope_of(principal),
            timedelta(days=state.settings.tokenwallet_usage_retention_days),
        )
        return await _run(request, idempotency_key, op, body=data, status=200, render=_results_out)


# -- authorizations ------------------------------------------------------------------------------


class AuthorizationIn(BaseModel):
    """A single-use hold (``model``, ``estimated_input_tokens``, ``max_output_tokens``: the
    most one call can cost is reserved) or, with ``multi_capture``, a grant of ``amount``
    (money in the account's currency) or ``tokens`` (package tokens) that usage records naming
    it capture many times, optionally scoped to ``model``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {
                    "title": "single-use hold",
                    "required": ["model", "estimated_input_tokens", "max_output_tokens"],
                    "properties": {
                        "multi_capture": {"const": False},
                        "model": {"type": "string"},
                        "estimated_input_tokens": {"type": "integer"},
                        "max_output_tokens": {"type": "integer"},
                        "amount": {"type": "null"},
                        "tokens": {"type": "null"},
                    },
                },
                {
                    "title": "multi-capture grant of money",
                    "required": ["multi_capture", "amount"],
                    "properties": {
                        "multi_capture": {"const": True},
                        "amount": {"type": "string"},
                        "tokens": {"type": "null"},
                        "estimated_input_tokens": {"type": "null"},
                        "max_output_tokens": {"type": "null"},
                    },
                },
                {
                    "title": "multi-capture grant of package tokens",
                    "required": ["multi_capture", "tokens"],
                    "properties": {
                        "multi_capture": {"const": True},
                        "tokens": {"type": "integer"},
                        "amount": {"type": "null"},
                        "estimated_input_tokens": {"type": "null"},
                        "max_output_tokens": {"type": "null"},
                    },
                },
            ]
        },
    )
    account_id: str = Field(min_length=1, max_length=64)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    estimated_input_tokens: int | None = Field(default=None, ge=0, le=10**9)
    max_output_tokens: int | None = Field(default=None, ge=0, le=10**9)
    multi_capture: bool = False
    amount: str | None = Field(
        default=None, pattern=r"^[0-9]{1,15}(\.[0-9]{1,18})?$", examples=["5.00"]
    )
    tokens: int | None = Field(default=None, ge=1, le=10**15)
    ttl_seconds: int | None = Field(default=None, ge=1, le=86_400)

    @model_validator(mode="after")
    def _one_form(self) -> AuthorizationIn:
        if self.multi_capture:
            if (self.amount is None) == (self.tokens is None):
                raise ValueError("a multi-capture authorization asks for amount or tokens")
            if self.estimated_input_tokens is not None or self.max_output_tokens is not None:
                raise ValueError(
                    "estimated_input_tokens and max_output_tokens are for single-use holds"
                )
        else:
            if self.amount is not None or self.tokens is not None:
                raise ValueError("amount and tokens need multi_capture: true")
            if (
                self.model is None
                or self.estimated_input_tokens is None
                or (self.max_output_tokens is None)
            ):
                raise ValueError(
                    "a single-use hold needs model, estimated_input_tokens and max_output_tokens"
                )
        return self


class IncrementIn(BaseModel):
    """Ask a multi-capture authorization for more (``amount`` or ``tokens``, in its unit),
    after charging ``records`` (the usage so far); ``ttl_seconds`` extends it from now."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [only("amount", "tokens"), only("tokens", "amount")]},
    )
    amount: str | None = Field(
        default=None, pattern=r"^[0-9]{1,15}(\.[0-9]{1,18})?$", examples=["5.00"]
    )
    tokens: int | None = Field(default=None, ge=1, le=10**15)
    ttl_seconds: int | None = Field(default=None, ge=1, le=86_400)
    records: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_BATCH)

    @model_validator(mode="after")
    def _one_unit(self) -> IncrementIn:
        if (self.amount is None) == (self.tokens is None):
            raise ValueError("send amount or tokens (the authorization's unit)")
        return self


_AUTH_RESPONSES = {201: ResponseSpec(AuthorizationOut)}


class AuthorizationsController(Controller):
    """``/v1/authorizations``: holds and multi-capture grants before calls."""

    path = "/v1/authorizations"
    tags = ["gateway"]
    guards = [requires("gateway")]

    @post("/", status_code=201, responses=_AUTH_RESPONSES)
    async def create(
        self,
        request: Request[Principal, Principal, State],
        data: AuthorizationIn,
        principal: Principal,
        state: State,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Approve (reserving what is asked, or for a grant what the account can give) or
        decline with a ``decline_code``."""
        ttl = timedelta(seconds=data.ttl_seconds or state.settings.tokenwallet_hold_ttl_seconds)
        op: Operation
        if data.multi_capture:
            op = Grant(
                data.account_id, ttl, data.amount, data.tokens, data.model, scope_of(principal)
            )
        else:
            assert data.model is not None
            op = Authorize(
                data.account_id,
                data.model,
                data.estimated_input_tokens or 0,
                data.max_output_tokens or 0,
                ttl,
                scope_of(principal),
            )
        return await _run(
            request, idempotency_key, op, body=data, status=201, render=authorization_out
        )

    @post(
        "/{authorization_id:str}/increment",
        status_code=200,
        responses={200: ResponseSpec(AuthorizationOut)},
    )
    async def increment(
        self,
        request: Request[Principal, Principal, State],
        authorization_id: str,
        data: IncrementIn,
        principal: Principal,
        state: State,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Charge the records sent, then grant more (``granted``: what this call added, possibly
        0 with ``final``). 409 ``authorization_closed`` once voided or expired."""
        op = Increment(
            authorization_id,
            data.amount,
            data.tokens,
            timedelta(seconds=data.ttl_seconds) if data.ttl_seconds else None,
            _parse_all(data.records),
            scope_of(principal),
            timedelta(days=state.settings.tokenwallet_usage_retention_days),
        )
        return await _run(
            request, idempotency_key, op, body=data, status=200, render=authorization_out
        )

    @post(
        "/{authorization_id:str}/void",
        status_code=200,
        responses={200: ResponseSpec(AuthorizationOut)},
    )
    async def void(
        self,
        request: Request[Principal, Principal, State],
        authorization_id: str,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Give back what it still reserves (repeat-safe)."""
        op = Release(authorization_id, "voided", scope_of(principal))
        return await _run(
            request, idempotency_key, op, body=None, status=200, render=authorization_out
        )

    @get(
        "/{authorization_id:str}",
        sync_to_thread=True,
        responses={200: ResponseSpec(AuthorizationOut)},
    )
    def show(self, authorization_id: str, db: Session, principal: Principal) -> Response[bytes]:
        """What it granted, what was captured and what it still reserves."""
        view = get_authorization(db, authorization_id, scope=scope_of(principal))
        return _json(200, authorization_out(view))


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
