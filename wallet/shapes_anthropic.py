"""Anthropic Messages usage and whole messages (pure).

``input_tokens`` EXCLUDES cache reads and writes; ``cache_creation`` splits writes by lifetime.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plans.errors import InvalidUsage
from plans.rating import Tokens
from wallet.shapes import (
    _GEMINI_KEYS,
    Parsed,
    UsageNotFinal,
    UsageShapeMismatch,
    _check,
    _count,
    _foreign,
    _mapping,
    _sub,
    _tier,
    _tools,
)


def from_anthropic(usage: Mapping[str, Any], *, where: str = "anthropic_usage") -> Tokens:
    """Normalize an Anthropic Messages ``usage`` object (cache fields are additive).

    Raises:
        UsageShapeMismatch: another format's usage, or a whole message.
        InvalidUsage: negative or non-integer counts, a TTL split that does not add up.
    """
    return _anthropic(usage, where)[0]


_OPENAI_USAGE_KEYS = frozenset(
    {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "input_tokens_details",
        "prompt_tokens_details",
        "completion_tokens_details",
    }
)


def _anthropic_form(usage: Mapping[str, Any], w: str) -> None:
    """Refuse what is not an Anthropic Messages usage object.

    A whole message, Gemini or OpenAI usage, missing counts.
    """
    if (
        usage.get("type") == "message"
        or "content" in usage
        or isinstance(usage.get("usage"), Mapping)
    ):
        raise UsageShapeMismatch(
            f"{w} holds a whole message, not its usage; send it as anthropic_message"
            " (usage and stop_reason are read from it) or send its usage"
        )
    _foreign(usage, _GEMINI_KEYS, w, "this is Gemini usageMetadata; send it as gemini_usage")
    _foreign(
        usage,
        _OPENAI_USAGE_KEYS,
        w,
        "this is an OpenAI usage object (its input tokens include cached tokens); send it as"
        " openai_usage",
    )
    if "input_tokens" not in usage or "output_tokens" not in usage:
        raise UsageShapeMismatch(f"{w} needs input_tokens and output_tokens")


def _anthropic_writes(usage: Mapping[str, Any], w: str) -> tuple[int, int]:
    """Cache writes for 5 minutes and for 1 hour (all 5 minutes without a split)."""
    creation = _count(usage, "cache_creation_input_tokens", where=w)
    split = _sub(usage, "cache_creation", w)
    w5 = _count(split, "ephemeral_5m_input_tokens", where=w)
    w1 = _count(split, "ephemeral_1h_input_tokens", where=w)
    if split is None or not (w5 or w1):
        return creation, 0
    if creation and w5 + w1 != creation:
        raise InvalidUsage(
            f"{w}: cache_creation 5m+1h ({w5 + w1}) differs from cache_creation_input_tokens"
            f" ({creation})"
        )
    return w5, w1


def _anthropic(usage: Mapping[str, Any], w: str) -> tuple[Tokens, str | None]:
    usage = _mapping(usage, w)
    _anthropic_form(usage, w)
    w5, w1 = _anthropic_writes(usage, w)
    od = _sub(usage, "output_tokens_details", w)
    stu = _sub(usage, "server_tool_use", w)
    where = f"{w}.server_tool_use"
    tools = {
        "web_search": _count(stu, "web_search_requests", where=where),
        "web_fetch": _count(stu, "web_fetch_requests", where=where),
        "code_execution": _count(stu, "code_execution_requests", where=where),
    }
    tier = _tier(usage.get("service_tier"), f"{w}.service_tier")
    if usage.get("speed") == "fast":
        tier = "fast"
    tokens = Tokens(
        input_tokens=_count(usage, "input_tokens", where=w),
        output_tokens=_count(usage, "output_tokens", where=w),
        cache_read_tokens=_count(usage, "cache_read_input_tokens", where=w),
        cache_write_5m_tokens=w5,
        cache_write_1h_tokens=w1,
        reasoning_tokens=_count(od, "thinking_tokens", where=w),
        tool_calls=_tools(tools),
    )
    return _check(tokens, w), tier


def _anthropic_message(obj: Mapping[str, Any], w: str) -> Parsed:
    obj = _mapping(obj, w)
    if obj.get("type") != "message" or not isinstance(obj.get("usage"), Mapping):
        if "input_tokens" in obj:
            raise UsageShapeMismatch(
                f"{w} holds a usage object, not a message; send it as anthropic_usage"
            )
        raise UsageShapeMismatch(f"{w} must be a Messages object (type 'message' with usage)")
    tokens, tier = _anthropic(obj["usage"], f"{w}.usage")
    reason = obj.get("stop_reason")
    if reason is None:
        raise UsageNotFinal(
            f"{w}.stop_reason is null (a stream's message_start); send the final message, or"
            " the last message_delta's usage as anthropic_usage with a finish_reason"
        )
    return Parsed(tokens, str(reason), False, tier, source="anthropic_message")
