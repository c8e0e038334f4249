"""``/v1/authorizations``: holds and multi-capture grants, run through the batcher like usage.

Create, increment, void, show.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.openapi import only
from api.routes.usage_records import parse_records
from api.routes.usage_results import (
    AuthorizationOut,
    authorization_out,
    json_response,
    run_operation,
)
from api.schemas import POSITIVE_DECIMAL, IdempotencyKey, scope_of
from api.usage_schema import RECORD_SCHEMA
from wallet.authorizations import get_authorization
from wallet.charging import MAX_BATCH
from wallet.gateway import (
    Authorize,
    Grant,
    Increment,
    Operation,
    Release,
)

#: money asked of a multi-capture grant, in the account's currency
GrantAmount = Annotated[
    str | None,
    Field(
        pattern=r"^[0-9]{1,15}(\.[0-9]{1,18})?$",
        examples=["5.00"],
        json_schema_extra=POSITIVE_DECIMAL,
    ),
]
#: package tokens asked of a multi-capture grant
GrantTokens = Annotated[int | None, Field(ge=1, le=10**15)]
#: how long an authorization holds from now
TtlSeconds = Annotated[int | None, Field(ge=1, le=86_400)]
#: the fields of a single-use hold only
_HOLD_ONLY = ("estimated_input_tokens", "max_output_tokens")


def _form(
    title: str,
    *,
    multi_capture: bool,
    given: dict[str, str],
    null: tuple[str, ...],
    required: list[str],
) -> dict[str, Any]:
    """One form of the body in the OpenAPI document: its fields typed, the others null.

    Args:
        title: the form's name.
        multi_capture: the value of ``multi_capture`` in this form.
        given: the JSON type of each field the form gives.
        null: the fields the form leaves out.
        required: the fields it must give.
    """
    properties: dict[str, Any] = {"multi_capture": {"const": multi_capture}}
    properties |= {name: {"type": kind} for name, kind in given.items()}
    properties |= {name: {"type": "null"} for name in null}
    return {"title": title, "required": required, "properties": properties}


class AuthorizationIn(BaseModel):
    """A request for a single-use hold or, with ``multi_capture``, a reusable grant.

    A single-use hold names ``model``, ``estimated_input_tokens`` and ``max_output_tokens``: the
    most one call can cost is reserved. A multi-capture grant holds ``amount`` (money in the
    account's currency) or ``tokens`` (package tokens) that usage records naming it capture
    many times, optionally scoped to ``model``.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                _form(
                    "single-use hold",
                    multi_capture=False,
                    given={
                        "model": "string",
                        "estimated_input_tokens": "integer",
                        "max_output_tokens": "integer",
                    },
                    null=("amount", "tokens"),
                    required=["model", "estimated_input_tokens", "max_output_tokens"],
                ),
                _form(
                    "multi-capture grant of money",
                    multi_capture=True,
                    given={"amount": "string"},
                    null=("tokens", *_HOLD_ONLY),
                    required=["multi_capture", "amount"],
                ),
                _form(
                    "multi-capture grant of package tokens",
                    multi_capture=True,
                    given={"tokens": "integer"},
                    null=("amount", *_HOLD_ONLY),
                    required=["multi_capture", "tokens"],
                ),
            ]
        },
    )
    account_id: str = Field(min_length=1, max_length=64)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    estimated_input_tokens: int | None = Field(default=None, ge=0, le=10**9)
    max_output_tokens: int | None = Field(default=None, ge=0, le=10**9)
    multi_capture: bool = False
    amount: GrantAmount = None
    tokens: GrantTokens = None
    ttl_seconds: TtlSeconds = None

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
    """Ask a multi-capture authorization for more (``amount`` or ``tokens``, in its unit).

    ``records`` (the usage so far) are charged first; ``ttl_seconds`` extends it from now.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [only("amount", "tokens"), only("tokens", "amount")]},
    )
    amount: GrantAmount = None
    tokens: GrantTokens = None
    ttl_seconds: TtlSeconds = None
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
        """Approve or decline with a ``decline_code``.

        Reserving what is asked, or for a grant what the account can give.
        """
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
        return await run_operation(
            request, idempotency_key, op, body=data, render=authorization_out
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
        """Charge the records sent, then grant more.

        ``granted``: what this call added, possibly 0 with ``final``. 409 ``authorization_closed``
        once voided or expired.
        """
        op = Increment(
            authorization_id,
            data.amount,
            data.tokens,
            timedelta(seconds=data.ttl_seconds) if data.ttl_seconds else None,
            parse_records(data.records, await request.body()),
            scope_of(principal),
            timedelta(days=state.settings.tokenwallet_usage_retention_days),
        )
        return await run_operation(
            request, idempotency_key, op, body=data, render=authorization_out
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
        return await run_operation(
            request, idempotency_key, op, body=None, render=authorization_out
        )

    @get(
        "/{authorization_id:str}",
        sync_to_thread=True,
        responses={200: ResponseSpec(AuthorizationOut)},
    )
    def show(self, authorization_id: str, db: Session, principal: Principal) -> Response[bytes]:
        """What it granted, what was captured and what it still reserves."""
        view = get_authorization(db, authorization_id, scope=scope_of(principal))
        return json_response(200, authorization_out(view))
