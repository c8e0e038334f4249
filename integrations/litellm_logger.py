"""LiteLLM adapter: report each call's usage to tokenwallet, refuse calls the wallet cannot pay.

It works from inside LiteLLM (SDK or proxy). :class:`TokenwalletLogger` is a LiteLLM
``CustomLogger``:

* **Usage**: on every success and failure event it takes LiteLLM's
  ``StandardLoggingPayload`` (``kwargs["standard_logging_object"]``), keeps what billing needs
  (tokens, cache and TTL details, finish reasons, service tier, status; no prompts or answers)
  and reports it through :class:`~integrations.tokenwallet_client.TokenwalletClient` as a
  ``litellm_payload`` record whose id is LiteLLM's call id: batched, retried, exactly once.
* **Pre-call**: before a call (``async_pre_call_deployment_hook`` in the SDK's async path and
  the router; ``async_pre_call_hook`` in the proxy) it reserves the call's estimated cost on
  a multi-capture grant of the account (one per account and model, opened and incremented as
  needed, see :class:`~integrations.grant.Grant`) and raises :class:`TokenwalletRefused` when
  the wallet says no. The usage record then names the grant, and its actual charge replaces
  the estimate.

The account comes from the call's metadata (``tokenwallet_account_id``), else from LiteLLM's
end user (``user``) or key metadata; ``account_of`` replaces that rule.

Imports nothing from the tokenwallet server; needs ``litellm`` (the gateway's own).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from integrations.grant import Grant
from integrations.tokenwallet_client import TokenwalletClient

log = logging.getLogger("integrations.tokenwallet.litellm")

#: The metadata key that names the tokenwallet account of a call.
ACCOUNT_KEY = "tokenwallet_account_id"

AccountOf = Callable[[Mapping[str, Any]], str | None]
Estimate = Callable[[Mapping[str, Any]], Mapping[str, int]]


class TokenwalletRefused(Exception):
    """The wallet cannot pay for this call.

    Prepaid credit and credit limit used up, or the call has no account. LiteLLM surfaces it to the
    caller; nothing was sent upstream.
    """

    def __init__(self, account_id: str | None, reason: str) -> None:
        """Name the account (``None`` when the call had none) and why it was refused."""
        super().__init__(f"tokenwallet refused the call for account {account_id}: {reason}")
        self.account_id = account_id
        self.reason = reason


def _metadata(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    params = kwargs.get("litellm_params")
    for source in (
        kwargs.get("metadata"),
        params.get("metadata") if isinstance(params, Mapping) else None,
    ):
        if isinstance(source, Mapping):
            out.update(source)
    return out


def default_account_of(kwargs: Mapping[str, Any]) -> str | None:
    """The account of a call.

    ``metadata.tokenwallet_account_id``, the key's metadata, the requester's metadata, else
    LiteLLM's end user (``user``).
    """
    meta = _metadata(kwargs)
    slp = kwargs.get("standard_logging_object")
    slp_meta = slp.get("metadata") if isinstance(slp, Mapping) else None
    candidates: list[object] = [meta.get(ACCOUNT_KEY)]
    for m in (meta, slp_meta or {}):
        for key in ("user_api_key_auth_metadata", "requester_metadata", "spend_logs_metadata"):
            inner = m.get(key)
            if isinstance(inner, Mapping):
                candidates.append(inner.get(ACCOUNT_KEY))
    candidates += [
        meta.get("user_api_key_end_user_id"),
        kwargs.get("user"),
        slp.get("end_user") if isinstance(slp, Mapping) else None,
    ]
    return next((str(c) for c in candidates if isinstance(c, str) and c), None)


def default_estimate(kwargs: Mapping[str, Any]) -> dict[str, int]:
    """A call's worst-case tokens before it is made.

    Its messages at 3 characters a token (generous: tokenizers average about 4) and its
    ``max_tokens`` (else 4,096) of output.
    """
    messages = kwargs.get("messages") or kwargs.get("input") or ""
    text = messages if isinstance(messages, str) else json.dumps(messages, default=str)
    out = kwargs.get("max_completion_tokens") or kwargs.get("max_tokens") or 4096
    return {"input_tokens": len(text) // 3 + 1, "output_tokens": int(out)}


#: What of a StandardLoggingPayload billing reads (everything else stays in the gateway).
_KEEP = ("id", "call_type", "status", "model", "prompt_tokens", "completion_tokens", "total_tokens")


def billing_payload(slp: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a StandardLoggingPayload that tokenwallet bills on.

    Token counts, the usage object (cache reads, writes by TTL, audio, reasoning, server tools),
    finish reasons, the service tier and the error code; no messages, answers or floats.
    """
    out: dict[str, Any] = {k: slp[k] for k in _KEEP if slp.get(k) is not None}
    meta = slp.get("metadata")
    usage = meta.get("usage_object") if isinstance(meta, Mapping) else None
    if isinstance(usage, Mapping):
        out["metadata"] = {"usage_object": _ints(usage)}
    breakdown = slp.get("cost_breakdown")
    if isinstance(breakdown, Mapping) and isinstance(breakdown.get("service_tier"), str):
        out["cost_breakdown"] = {"service_tier": breakdown["service_tier"]}
    response = slp.get("response")
    if isinstance(response, Mapping) and isinstance(response.get("choices"), list):
        out["response"] = {
            "choices": [
                {"finish_reason": c.get("finish_reason")}
                for c in response["choices"]
                if isinstance(c, Mapping)
            ]
        }
    info = slp.get("error_information")
    if isinstance(info, Mapping) and info.get("error_code") is not None:
        out["error_information"] = {"error_code": str(info["error_code"])}
    return out


def _refused_here(kwargs: Mapping[str, Any]) -> bool:
    """A failure event of a call this logger refused before it was made."""
    if isinstance(kwargs.get("exception"), TokenwalletRefused):
        return True
    slp = kwargs.get("standard_logging_object")
    info = slp.get("error_information") if isinstance(slp, Mapping) else None
    return isinstance(info, Mapping) and info.get("error_class") == TokenwalletRefused.__name__


def _ints(value: Any) -> Any:
    """Integers, strings, booleans and containers of them (the client sends no floats)."""
    if isinstance(value, Mapping):
        return {str(k): v for k, raw in value.items() if (v := _ints(raw)) is not None}
    if isinstance(value, list):
        return [v for v in (_ints(x) for x in value) if v is not None]
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    return value


class TokenwalletLogger(CustomLogger):
    """Report LiteLLM calls to tokenwallet and refuse those the wallet cannot pay.

    Args:
        client: the gateway's tokenwallet client (its batching does the reporting).
        account_of: the account of a call (see :func:`default_account_of`).
        model_of: the catalog model of a LiteLLM model name (default: the name unchanged).
        authorize: reserve each call on a grant before it is made (the pre-call hooks);
            off, calls are only reported.
        grant_amount: what each grant asks for and each increment adds (money, the account's
            currency).
        estimate: a call's worst-case tokens (see :func:`default_estimate`).
    """

    def __init__(
        self,
        client: TokenwalletClient,
        *,
        account_of: AccountOf = default_account_of,
        model_of: Callable[[str], str] = lambda model: model,
        authorize: bool = True,
        grant_amount: Decimal | str = "5.00",
        estimate: Estimate = default_estimate,
    ) -> None:
        """Keep the settings (described on the class); grants are opened on first use."""
        super().__init__()
        self.client = client
        self.account_of = account_of
        self.model_of = model_of
        self.authorize = authorize
        self.grant_amount = Decimal(str(grant_amount))
        self.estimate = estimate
        self._lock = threading.Lock()
        self._grants: dict[tuple[str, str], Grant] = {}
        self._spent: dict[str, tuple[Grant, Decimal]] = {}  # call id -> reservation

    # -- before the call ---------------------------------------------------------------------

    def reserve(self, kwargs: Mapping[str, Any]) -> None:
        """Reserve a call's estimated cost on its account's grant (blocking).

        Raises:
            TokenwalletRefused: no account, or the wallet cannot cover the estimate.
        """
        call_id = kwargs.get("litellm_call_id")
        account = self.account_of(kwargs)
        if account is None:
            raise TokenwalletRefused(None, f"the call names no account (metadata.{ACCOUNT_KEY})")
        model = self.model_of(str(kwargs.get("model") or ""))
        grant = self._grant(account, model)
        if grant.status == "declined":
            with self._lock:
                self._grants.pop((account, model), None)
            raise TokenwalletRefused(account, grant.decline_code or "declined")
        cost = grant.cost(self.estimate(kwargs))
        if not grant.try_spend(cost):
            raise TokenwalletRefused(account, grant.decline_code or "insufficient_funds")
        if isinstance(call_id, str):
            with self._lock:
                self._spent[call_id] = (grant, cost)

    def _grant(self, account: str, model: str) -> Grant:
        with self._lock:
            grant = self._grants.get((account, model))
        if grant is not None:
            return grant
        grant = self.client.grant(account, amount=self.grant_amount, model=model, renew=True)
        with self._lock:
            return self._grants.setdefault((account, model), grant)

    async def async_pre_call_deployment_hook(
        self, kwargs: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        """LiteLLM SDK (async) and router: reserve before the request is sent."""
        if self.authorize:
            import asyncio

            await asyncio.to_thread(self.reserve, kwargs)
        return None

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        """LiteLLM proxy: reserve before the request is routed.

        The proxy answers the refusal to its client.
        """
        if self.authorize:
            import asyncio

            meta = getattr(user_api_key_dict, "metadata", None)
            view = dict(data)
            if isinstance(meta, Mapping):
                view["metadata"] = {**meta, **(data.get("metadata") or {})}
            end_user = getattr(user_api_key_dict, "end_user_id", None)
            if end_user and not view.get("user"):
                view["user"] = end_user
            await asyncio.to_thread(self.reserve, view)
            if "litellm_call_id" in view:
                data["litellm_call_id"] = view["litellm_call_id"]
        return None

    # -- after the call ----------------------------------------------------------------------

    def record_of(self, kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
        """The usage record of a finished call (None: LiteLLM gave no logging payload)."""
        slp = kwargs.get("standard_logging_object")
        if not isinstance(slp, Mapping):
            log.warning("LiteLLM call without standard_logging_object: not reported")
            return None
        call_id = str(slp.get("litellm_call_id") or kwargs.get("litellm_call_id") or slp["id"])
        started = slp.get("startTime")
        occurred = (
            datetime.fromtimestamp(started, UTC)
            if isinstance(started, int | float)
            else datetime.now(UTC)
        )
        return {
            "id": call_id,
            "account_id": self.account_of(kwargs),
            "model": self.model_of(str(kwargs.get("model") or slp.get("model") or "")),
            "occurred_at": occurred,
            "litellm_payload": billing_payload(slp),
            **(
                {"upstream": str(slp["custom_llm_provider"])[:64]}
                if slp.get("custom_llm_provider")
                else {}
            ),
        }

    def _report(self, kwargs: Mapping[str, Any]) -> None:
        if _refused_here(kwargs):
            return  # the call was never made: nothing to bill
        record = self.record_of(kwargs)
        if record is None:
            return
        if record["account_id"] is None:
            log.warning("LiteLLM call %s names no account: not reported", record["id"])
            return
        with self._lock:
            spent = self._spent.pop(record["id"], None)
        if spent is not None:
            grant, cost = spent
            grant.settle(record, cost)
        else:
            self.client.report(record)

    def log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Report the usage of a successful call (sync path); only ``kwargs`` is read."""
        self._report(kwargs)

    def log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Report the usage of a failed call (sync path); only ``kwargs`` is read."""
        self._report(kwargs)

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Report the usage of a successful call (async path); only ``kwargs`` is read."""
        self._report(kwargs)

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Report the usage of a failed call (async path); only ``kwargs`` is read."""
        self._report(kwargs)

    def close(self) -> None:
        """Void every grant (flushing their usage first); the client stays open."""
        with self._lock:
            grants = list(self._grants.values())
            self._grants.clear()
        for g in grants:
            if g.status == "approved":
                g.void()
