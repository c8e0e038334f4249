"""LiteLLM's ``StandardLoggingPayload`` (pure).

Its usage object read as OpenAI usage, its status and finish reasons as the outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plans.errors import InvalidUsage
from wallet.outcomes import _worst
from wallet.shapes import Parsed, UsageShapeMismatch, _mapping, _tier
from wallet.shapes_openai import _openai


def _litellm(obj: Mapping[str, Any], w: str) -> Parsed:
    obj = _mapping(obj, w)
    if "standard_logging_object" in obj:
        raise UsageShapeMismatch(
            f"{w} holds callback kwargs; send kwargs['standard_logging_object']"
        )
    missing = sorted({"status", "prompt_tokens", "completion_tokens"} - set(obj))
    if missing:
        raise UsageShapeMismatch(
            f"{w} is not a StandardLoggingPayload: it lacks {', '.join(missing)}"
        )
    status = obj.get("status")
    if status not in ("success", "failure"):
        raise InvalidUsage(f"{w}.status must be 'success' or 'failure', got {status!r}")
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    usage_object = metadata.get("usage_object") if metadata else None
    tier: str | None = None
    if isinstance(usage_object, Mapping) and usage_object:
        tokens, tier = _openai(usage_object, f"{w}.metadata.usage_object")
    else:
        tokens, tier = _openai(
            {
                "prompt_tokens": obj.get("prompt_tokens"),
                "completion_tokens": obj.get("completion_tokens"),
            },
            w,
        )
    breakdown = obj.get("cost_breakdown")
    if isinstance(breakdown, Mapping) and breakdown.get("service_tier"):
        tier = _tier(breakdown.get("service_tier"), f"{w}.cost_breakdown.service_tier")
    http_status: int | None = None
    if status == "failure":
        info = obj.get("error_information") or {}
        code = str(info.get("error_code") or "") if isinstance(info, Mapping) else ""
        if code.isdigit() and 100 <= int(code) <= 599:
            http_status = int(code)
        return Parsed(tokens, "failure", False, tier, http_status, source="litellm_payload")
    reason = None
    response = obj.get("response")
    if isinstance(response, Mapping) and isinstance(response.get("choices"), list):
        reason = _worst(
            [c.get("finish_reason") for c in response["choices"] if isinstance(c, Mapping)]
        )
    return Parsed(tokens, reason, False, tier, source="litellm_payload")
