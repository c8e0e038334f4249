"""``POST /v1/integrations/litellm``: LiteLLM's own ``GenericAPILogger`` points here.

LiteLLM sends its ``StandardLoggingPayload`` s as they are: a JSON array (``log_format:
json_array``, its default), newline-delimited JSON (``ndjson``) or one object (``single``),
whatever the Content-Type. Each payload becomes a usage record read as ``litellm_payload``:
its id is LiteLLM's call id (``litellm_call_id``, else ``id``), so a batch LiteLLM sends again
is answered ``duplicate``; its account is the first of the key's metadata
``tokenwallet_account_id``, the requester's metadata ``tokenwallet_account_id``, the spend-log
metadata's, the end user (``end_user`` / ``user_api_key_end_user_id``); its model is
``model``. The answer is the same as ``POST /v1/usage``'s. Authenticate with a gateway key:
``GENERIC_LOGGER_HEADERS="Authorization=Bearer <key>"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from datetime import timedelta as _timedelta
from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec

from api.auth import Principal, requires
from api.routes.usage_records import parse_record
from api.routes.usage_results import UsageBatchOut, results_out, run_operation
from api.schemas import IdempotencyKey, scope_of
from wallet.errors import InvalidRequest
from wallet.gateway import MAX_BATCH, ChargeUsage
from wallet.records import Rejected, UsageIn

#: Where a payload may name the tokenwallet account, in order.
ACCOUNT_KEY = "tokenwallet_account_id"


def account_of(slp: Mapping[str, Any]) -> str | None:
    """The tokenwallet account a LiteLLM payload is for (see the module docstring)."""
    raw = slp.get("metadata")
    meta: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    candidates: list[object] = []
    for key in ("user_api_key_auth_metadata", "requester_metadata", "spend_logs_metadata"):
        inner = meta.get(key)
        if isinstance(inner, Mapping):
            candidates.append(inner.get(ACCOUNT_KEY))
    candidates += [slp.get("end_user"), meta.get("user_api_key_end_user_id")]
    return next((c for c in candidates if isinstance(c, str) and c), None)


def _upstream(slp: Mapping[str, Any]) -> str | None:
    """LiteLLM's provider of the call (``custom_llm_provider``) as the record's upstream."""
    value = slp.get("custom_llm_provider")
    return value[:64] if isinstance(value, str) and value else None


def record_of(slp: Mapping[str, Any]) -> dict[str, Any]:
    """The usage record of one StandardLoggingPayload."""
    started = slp.get("startTime")
    occurred = (
        datetime.fromtimestamp(started, UTC)
        if isinstance(started, int | float) and not isinstance(started, bool)
        else None
    )
    return {
        "id": slp.get("litellm_call_id") or slp.get("id"),
        "account_id": account_of(slp),
        "model": slp.get("model"),
        "occurred_at": occurred.isoformat() if occurred else None,
        "upstream": _upstream(slp),
        "litellm_payload": dict(slp),
    }


def payloads_of(body: bytes) -> list[Mapping[str, Any]]:
    """The payloads of a GenericAPILogger request, in any of its three formats.

    Raises:
        InvalidRequest: not JSON, or not objects.
    """
    text = body.strip()
    if not text:
        raise InvalidRequest("empty body: LiteLLM sends a JSON array of StandardLoggingPayloads")
    try:
        decoded = msgspec.json.decode(text)
        items = decoded if isinstance(decoded, list) else [decoded]
    except msgspec.DecodeError:
        try:  # ndjson
            items = [msgspec.json.decode(line) for line in text.splitlines() if line.strip()]
        except msgspec.DecodeError:
            raise InvalidRequest(
                "the body is neither JSON nor newline-delimited JSON (LiteLLM's log formats"
                " json_array, ndjson and single are accepted)"
            ) from None
    if not items or not all(isinstance(i, Mapping) for i in items):
        raise InvalidRequest("every payload must be a StandardLoggingPayload object")
    if len(items) > MAX_BATCH:
        raise InvalidRequest(
            f"{len(items)} payloads in one request; at most {MAX_BATCH} (LiteLLM's batch_size)"
        )
    return items


class LiteLLMReceiver(Controller):
    """LiteLLM's GenericAPILogger, received as it sends."""

    path = "/v1/integrations/litellm"
    tags = ["gateway"]
    guards = [requires("gateway")]

    @post("/", status_code=200, responses={200: ResponseSpec(UsageBatchOut)})
    async def receive(
        self,
        request: Request[Principal, Principal, State],
        principal: Principal,
        state: State,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Charge a batch of LiteLLM StandardLoggingPayloads; results in order.

        The body is a JSON array, ndjson or one object, charged like ``POST /v1/usage`` with
        ``litellm_payload`` records.
        """
        items = payloads_of(await request.body())
        records: list[UsageIn | Rejected] = []
        for i, slp in enumerate(items):
            raw = record_of(slp)
            missing = [k for k in ("id", "account_id", "model", "occurred_at") if not raw[k]]
            if missing:
                records.append(
                    Rejected(
                        str(raw["id"] or f"#{i}"),
                        "validation_error",
                        f"the payload gives no {', '.join(missing)}"
                        + (
                            f" (name the account in metadata {ACCOUNT_KEY} or the end user)"
                            if "account_id" in missing
                            else ""
                        ),
                    )
                )
                continue
            records.append(parse_record(i, raw))
        op = ChargeUsage(
            tuple(records),
            scope_of(principal),
            _timedelta(days=state.settings.tokenwallet_usage_retention_days),
        )
        return await run_operation(
            request,
            idempotency_key,
            op,
            body=items,
            render=results_out,
        )
