"""Answers of the gateway hot path and the runner that hands an operation to the batcher.

The answers are plain dicts encoded with msgspec. The runner hands an operation to the
process's group-commit batcher or, with an ``Idempotency-Key``, runs it on its own through
:func:`api.idempotency.run_idempotent`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

import msgspec
from litestar import Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from api.audit import AUDITED_ROLES
from api.auth import principal_of
from api.batcher import Batcher
from api.deps import now_of
from api.idempotency import run_idempotent
from api.metrics import observe, observe_failure
from api.routes.catalog import ModelPriceOut, price_out
from api.schemas import Money
from api.usage_schema import ChargeOut, TokensOut
from ledger.amounts import Amount, format_atoms
from ledger.errors import DomainError
from ledger.units import Unit
from plans.prices import FEE_KINDS
from plans.rating import TOKEN_COMPONENTS, TOKEN_FIELDS, Rating, Tokens
from wallet.gateway import (
    AuthorizationView,
    Operation,
    OperationResult,
    UsageResult,
    execute,
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


def _money(atoms: int | None, amount_of: Amount) -> dict[str, str] | None:
    if atoms is None:
        return None
    return {"amount": Amount(atoms, amount_of.unit).format(), "currency": amount_of.unit.code}


def _amount(atoms: int, view: AuthorizationView) -> dict[str, Any]:
    if view.token_grant:
        return {"tokens": atoms}
    return {"amount": Amount(atoms, view.currency).format(), "currency": view.currency.code}


def grant_state(view: AuthorizationView) -> dict[str, Any]:
    """A multi-capture authorization's state after a record captured from it."""
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
        out["authorization"] = grant_state(r.authorization)
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


def results_out(results: Sequence[UsageResult]) -> dict[str, Any]:
    """A usage batch's answer: each record's result in request order."""
    return {"results": [_result_out(r) for r in results]}


class AuthorizationOut(BaseModel):
    """An authorization.

    ``held``: what was granted (money, or ``{"tokens": n}`` when package tokens cover it);
    ``captured``: what usage records took from it; ``remaining``: what it still reserves; ``final``:
    the account could give no more than this.
    """

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
        out["usage"] = results_out(view.usage)
    return out


_ENCODER = msgspec.json.Encoder()


def json_response(status: int, body: Any) -> Response[bytes]:
    """``body`` encoded with msgspec (the hot path builds plain dicts, not models)."""
    return Response(_ENCODER.encode(body), status_code=status, media_type="application/json")


async def run_operation(
    request: Request[Any, Any, Any],
    key: str | None,
    op: Operation,
    *,
    body: Any,
    render: Callable[[Any], Any],
) -> Response[bytes]:
    """Run one gateway operation and answer the route's status with its rendered result.

    Grouped with concurrent calls; alone with its Idempotency-Key (a replay returns the first
    response), and alone when an admin or finance key calls, so the audit log records it.

    Args:
        request: the request (its route's status, its app's batcher and sessions).
        key: the ``Idempotency-Key`` header, or None.
        op: the operation.
        body: what the key fingerprints and the audit records: the parsed request body.
        render: the operation's result as the response body.
    """
    status = request.route_handler.status_code
    if key is not None or principal_of(request).role in AUDITED_ROLES:
        # alone, in its own transaction: replay protection, and the audit row of an admin's
        # or finance's call (gateway keys are not audited and take the grouped path)
        return await _run_alone(request, key, op, body=body, status=status, render=render)
    batcher: Batcher = request.app.state.batcher
    result: OperationResult = await batcher.run(op)
    if isinstance(result, DomainError):
        raise result
    return json_response(status, render(result))


async def _run_alone(
    request: Request[Any, Any, Any],
    key: str | None,
    op: Operation,
    *,
    body: Any,
    status: int,
    render: Callable[[Any], Any],
) -> Response[bytes]:
    import anyio

    state = request.app.state

    def work() -> Response[bytes]:
        ran: list[OperationResult] = []  # empty when a replay answers

        def produce(db: Session) -> Any:
            (result,) = execute(db, [op], now=now_of(state))
            ran.append(result)
            if isinstance(result, DomainError):
                raise result
            return render(result)

        # counted on /metrics as the batcher counts grouped calls: a result once committed (or a
        # domain error), a failed transaction as a failure
        try:
            with state.sessionmaker() as db:
                response = run_idempotent(
                    db, request, key, body=body, status_code=status, produce=lambda: produce(db)
                )
        except Exception as exc:
            if ran and not isinstance(ran[0], DomainError):
                observe_failure(op, exc)
            elif ran:
                observe([op], ran)
            raise
        if ran:
            observe([op], ran)
        return response

    return await anyio.to_thread.run_sync(work)
