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
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.batcher import Batcher
from api.boundary import check_record, is_clean_line, json_text_clean
from api.deps import now_of
from api.idempotency import run_idempotent
from api.openapi import only
from api.routes.catalog import ModelPriceOut, price_out
from api.schemas import POSITIVE_DECIMAL, IdempotencyKey, Money, scope_of
from api.usage_schema import RECORD_SCHEMA, ChargeOut, TokensOut
from ledger.amounts import Amount, format_atoms
from ledger.errors import DomainError
from ledger.units import Unit
from plans.errors import InvalidUsage
from plans.prices import FEE_KINDS, SERVICE_TIERS, STANDARD_TIERS
from plans.rating import TOKEN_COMPONENTS, TOKEN_FIELDS, Rating, Tokens
from wallet.accounts import get_account
from wallet.authorizations import get_authorization
from wallet.charging import MAX_BATCH
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
from wallet.normalize import PROVIDER_FIELDS, Parsed, canonical_tokens, parse_usage
from wallet.records import Rejected, UsageIn

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_AccountId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=10**12)]


_Object = dict[str, Any] | None


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
    cache_write_30m_tokens: _Count | None = None
    cache_write_12h_tokens: _Count | None = None
    input_audio_tokens: _Count | None = None
    input_image_tokens: _Count | None = None
    output_audio_tokens: _Count | None = None
    output_image_tokens: _Count | None = None
    tool_calls: Annotated[dict[str, _Count], msgspec.Meta(max_length=10)] | None = None
    batch: bool = False
    service_tier: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    upstream: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    http_status: Annotated[int, msgspec.Meta(ge=100, le=599)] = 200
    finish_reason: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    truncated: bool = False
    authorization_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    tags: Annotated[dict[str, str], msgspec.Meta(max_length=50)] = {}
    openai_usage: _Object = None
    openai_response: _Object = None
    anthropic_usage: _Object = None
    anthropic_message: _Object = None
    gemini_usage: _Object = None
    gemini_response: _Object = None
    litellm_payload: _Object = None


def _problem_of(exc: msgspec.ValidationError) -> str:
    """``field: message`` from msgspec's ``message - at `$.field` ``."""
    message, _, where = str(exc).rpartition(" - at `$.")
    if not message:
        return str(exc)
    return f"{where.rstrip('`')}: {message}"


class UsageBatchIn(BaseModel):
    """Up to 1,000 records; each is validated on its own, so one bad record fails alone."""

    model_config = ConfigDict(extra="forbid")
    records: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_BATCH, json_schema_extra={"items": RECORD_SCHEMA}
    )


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
    tokens: TokensOut | None = Field(
        default=None, description="charged records: the token breakdown that was rated"
    )
    charge: ChargeOut | None = Field(
        default=None, description="charged records: the rated amount by component"
    )


class UsageBatchOut(BaseModel):
    """Results in request order."""

    results: list[UsageResultOut]


def _parse(index: int, raw: dict[str, Any], text_clean: bool = False) -> UsageIn | Rejected:
    rid = raw.get("id") if is_clean_line(raw.get("id")) else f"#{index}"
    try:
        check_record(raw, index, text_clean=text_clean)
        rec = msgspec.convert(raw, _Record)
        if (
            rec.openai_usage is None
            and rec.openai_response is None
            and rec.anthropic_usage is None
            and rec.anthropic_message is None
            and rec.gemini_usage is None
            and rec.gemini_response is None
            and rec.litellm_payload is None
        ):
            tokens = canonical_tokens(
                rec.input_tokens or 0,
                rec.output_tokens or 0,
                rec.cache_read_tokens or 0,
                rec.cache_write_5m_tokens or 0,
                rec.cache_write_1h_tokens or 0,
                rec.reasoning_tokens or 0,
                rec.cache_write_30m_tokens or 0,
                rec.cache_write_12h_tokens or 0,
                rec.input_audio_tokens or 0,
                rec.input_image_tokens or 0,
                rec.output_audio_tokens or 0,
                rec.output_image_tokens or 0,
                rec.tool_calls,
            )
            if rec.service_tier is None:
                tier, batch = None, rec.batch
                finish, truncated, status = rec.finish_reason, rec.truncated, rec.http_status
            else:
                tier, batch, finish, truncated, status = _outcome(rec, Parsed(tokens))
        else:
            provider = {k: v for k in PROVIDER_FIELDS if (v := getattr(rec, k)) is not None}
            parsed = parse_usage(
                {k: getattr(rec, k) for k in TOKEN_FIELDS}, provider, tool_calls=rec.tool_calls
            )
            tokens = parsed.tokens
            tier, batch, finish, truncated, status = _outcome(rec, parsed)
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
        batch=batch,
        http_status=status,
        finish_reason=finish,
        truncated=truncated,
        authorization_id=rec.authorization_id,
        tags=rec.tags,
        service_tier=tier,
        upstream=rec.upstream,
    )


def _outcome(rec: _Record, parsed: Parsed) -> tuple[str | None, bool, str | None, bool, int]:
    """Service tier, batch, finish reason, truncation and HTTP status of a record: its own
    fields, or what its provider object says (the two must agree).

    Raises:
        InvalidUsage: the record's fields contradict its provider object.
    """
    tier = parsed.service_tier
    if rec.service_tier is not None:
        own = rec.service_tier.lower()
        own = "standard" if own in STANDARD_TIERS else own
        if own != "standard" and own not in SERVICE_TIERS:
            raise InvalidUsage(
                f"service_tier {rec.service_tier!r} is not a known service tier"
                f" (standard, {', '.join(SERVICE_TIERS)})"
            )
        if tier is not None and tier != own:
            raise InvalidUsage(
                f"service_tier {rec.service_tier!r} contradicts the provider object's {tier!r}"
            )
        tier = own
    batch = rec.batch or tier == "batch"
    if batch and tier not in (None, "standard", "batch"):
        raise InvalidUsage(f"batch: true contradicts service_tier {tier!r}")
    tier = None if tier in (None, "standard", "batch") else tier
    finish, truncated = rec.finish_reason, rec.truncated
    if parsed.finish_reason is not None or parsed.truncated:
        if finish is not None and finish != parsed.finish_reason:
            raise InvalidUsage(
                f"finish_reason {finish!r} contradicts the provider object's"
                f" {parsed.finish_reason!r}; it is read from the object, leave it out"
            )
        finish, truncated = parsed.finish_reason, truncated or parsed.truncated
    status = rec.http_status
    if parsed.http_status is not None and status == 200:
        status = parsed.http_status
    return tier, batch, finish, truncated, status


def _parse_all(records: Sequence[dict[str, Any]], body: bytes) -> tuple[UsageIn | Rejected, ...]:
    """Every record of a batch, each checked and parsed alone (``body``: the request's JSON
    text, scanned once for control characters)."""
    clean = json_text_clean(body)
    return tuple(_parse(i, raw, clean) for i, raw in enumerate(records))


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
    if r.tokens is not None and r.rating is not None and r.billed is not None:
        out["tokens"] = _tokens_out(r.tokens)
        out["charge"] = _charge_out(r.tokens, r.rating, r.billed.unit)
    return out


def _tokens_out(t: Tokens) -> dict[str, Any]:
    """The parsed token breakdown (the canonical fields; zero counts left out)."""
    out: dict[str, Any] = {}
    if t.input_tokens:
        out["input_tokens"] = t.input_tokens
    if t.output_tokens:
        out["output_tokens"] = t.output_tokens
    if t.prompt_tokens != t.input_tokens or t.reasoning_tokens:
        for k in TOKEN_FIELDS:
            v = getattr(t, k)
            if v:
                out[k] = v
    if t.tool_calls:
        out["tool_calls"] = dict(t.tool_calls)
    return out


_COMPONENT_NAMES = tuple(c.value for c in TOKEN_COMPONENTS)


def _charge_out(t: Tokens, rating: Rating, unit: Unit) -> dict[str, Any]:
    """The rated amount by component (before the failed-request policy and the burn-down)."""
    components: dict[str, str] = {}
    for name, atoms in zip(_COMPONENT_NAMES, rating.parts, strict=True):
        if atoms:
            components[name] = format_atoms(atoms, unit)
    if t.tool_calls:
        for kind, atoms in zip(FEE_KINDS, rating.fees, strict=True):
            if atoms:
                components[kind] = format_atoms(atoms, unit)
    if rating.discount:
        components["batch_discount"] = format_atoms(-rating.discount, unit)
    return {
        "rated": format_atoms(rating.total, unit),
        "currency": unit.code,
        "service_tier": rating.tier or "standard",
        "context_tier": rating.above_input_tokens,
        "components": components,
    }


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
            _parse_all(data.records, await request.body()),
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
        default=None,
        pattern=r"^[0-9]{1,15}(\.[0-9]{1,18})?$",
        examples=["5.00"],
        json_schema_extra=POSITIVE_DECIMAL,
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
        default=None,
        pattern=r"^[0-9]{1,15}(\.[0-9]{1,18})?$",
        examples=["5.00"],
        json_schema_extra=POSITIVE_DECIMAL,
    )
    tokens: int | None = Field(default=None, ge=1, le=10**15)
    ttl_seconds: int | None = Field(default=None, ge=1, le=86_400)
    records: list[dict[str, Any]] = Field(
        default_factory=list, max_length=MAX_BATCH, json_schema_extra={"items": RECORD_SCHEMA}
    )

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
            _parse_all(data.records, await request.body()),
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
            f"SELECT {_GROUPS[group_by]} AS key, count(*) AS n,"  # noqa: S608
            " sum(input_tokens + input_audio_tokens + input_image_tokens) AS i,"
            " sum(output_tokens) AS o, sum(cache_read_tokens) AS cr,"
            " sum(cache_write_5m_tokens + cache_write_30m_tokens + cache_write_1h_tokens"
            " + cache_write_12h_tokens) AS cw,"
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
