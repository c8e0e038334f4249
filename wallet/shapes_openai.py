"""OpenAI usage and whole OpenAI response objects (pure).

Chat Completions and Responses, and LiteLLM's Chat-shaped ``Usage``.
``prompt_tokens``/``input_tokens`` INCLUDE cached and written tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plans.errors import InvalidUsage
from plans.rating import Tokens
from wallet.outcomes import REFUSAL_REASONS, _worst
from wallet.shapes import (
    _ANTHROPIC_ONLY,
    _GEMINI_KEYS,
    Parsed,
    UsageNotFinal,
    UsageShapeMismatch,
    _check,
    _count,
    _foreign,
    _mapping,
    _replace_tools,
    _sub,
    _tier,
    _tools,
)


def _openai_writes(
    written: int, details: Mapping[str, Any] | None, *, where: str, short: str
) -> dict[str, int]:
    """Cache writes by TTL.

    From a TTL split (OpenAI ``ttl_30m_tokens``/``ttl_12h_tokens``, LiteLLM
    ``ephemeral_*_input_tokens``), else all at ``short`` (the provider's default).
    """
    out = {"5m": 0, "30m": 0, "1h": 0, "12h": 0}
    if details:
        for ttl in out:
            out[ttl] = _count(details, f"ttl_{ttl}_tokens", where=where) + _count(
                details, f"ephemeral_{ttl}_input_tokens", where=where
            )
        split = sum(out.values())
        if split:
            if written and split != written:
                raise InvalidUsage(
                    f"{where}: the cache writes split by TTL ({split}) differ from the cache"
                    f" writes ({written})"
                )
            return out
    out[short] = written
    return out


def from_openai(usage: Mapping[str, Any], *, where: str = "openai_usage") -> Tokens:
    """Normalize an OpenAI Chat Completions or Responses ``usage`` object.

    LiteLLM's ``Usage`` included: its Anthropic extras and TTL split are read.

    Raises:
        UsageShapeMismatch: another format's usage, or a whole response.
        InvalidUsage: negative or non-integer counts, parts exceeding their whole.
    """
    return _openai(usage, where)[0]


_Details = Mapping[str, Any] | None


def _openai_form(usage: Mapping[str, Any], w: str) -> tuple[int, int, _Details, _Details]:
    """Which OpenAI usage form ``usage`` is (Chat Completions or Responses).

    Its prompt and output counts and its prompt and output details; a shape of another format is
    refused.
    """
    _foreign(
        usage,
        _GEMINI_KEYS,
        w,
        "this is Gemini usageMetadata or a Gemini response; send it as gemini_usage or"
        " gemini_response",
    )
    if "choices" in usage or "output" in usage or isinstance(usage.get("usage"), Mapping):
        raise UsageShapeMismatch(
            f"{w} holds a whole response object, not its usage; send it as openai_response"
            " (usage, finish reason and service tier are read from it) or send its usage"
        )
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        return (
            _count(usage, "prompt_tokens", where=w),
            _count(usage, "completion_tokens", where=w),
            _sub(usage, "prompt_tokens_details", w),
            _sub(usage, "completion_tokens_details", w),
        )
    if "input_tokens" in usage and "output_tokens" in usage:
        _foreign(
            usage,
            _ANTHROPIC_ONLY,
            w,
            "this is an Anthropic Messages usage object (its input_tokens exclude cached"
            " tokens); send it as anthropic_usage",
        )
        if not ({"input_tokens_details", "output_tokens_details", "total_tokens"} & set(usage)):
            raise UsageShapeMismatch(
                f"{w} has input_tokens and output_tokens but none of total_tokens,"
                " input_tokens_details, output_tokens_details: an Anthropic usage object is"
                " sent as anthropic_usage"
            )
        return (
            _count(usage, "input_tokens", where=w),
            _count(usage, "output_tokens", where=w),
            _sub(usage, "input_tokens_details", w),
            _sub(usage, "output_tokens_details", w),
        )
    raise UsageShapeMismatch(
        f"{w} has none of prompt_tokens, completion_tokens (Chat Completions) or"
        " input_tokens and output_tokens (Responses)"
    )


def _openai_cache(
    usage: Mapping[str, Any], pd: _Details, w: str
) -> tuple[int, int, dict[str, int]]:
    """Cache reads, cache writes and cache writes by lifetime of an OpenAI usage object.

    Or LiteLLM.
    """
    cached = _count(pd, "cached_tokens", where=w)
    written = _count(pd, "cache_write_tokens", where=w) or _count(
        pd, "cache_creation_tokens", where=w
    )
    # LiteLLM's Usage repeats Anthropic's counts at the top level: they must agree
    for key, value in (
        ("cache_read_input_tokens", cached),
        ("cache_creation_input_tokens", written),
    ):
        top = _count(usage, key, where=w)
        if key in usage and usage[key] is not None and top != value:
            if value != 0:
                raise InvalidUsage(f"{w}: {key} ({top}) differs from the details ({value})")
            if key == "cache_read_input_tokens":
                cached = top
            else:
                written = top
    anthropic_via_litellm = "cache_creation_input_tokens" in usage
    details = _sub(pd, "cache_write_tokens_details", w) if pd else None
    if details is None and pd:
        details = _sub(pd, "cache_creation_token_details", w)
    writes = _openai_writes(
        written, details, where=w, short="5m" if anthropic_via_litellm else "30m"
    )
    return cached, written, writes


def _openai_media_in(pd: _Details, w: str) -> tuple[int, int]:
    """Uncached audio and image input tokens."""
    audio_in = _count(pd, "audio_tokens", where=w)
    image_in = _count(pd, "image_tokens", where=w)
    cached_details = _sub(pd, "cached_tokens_details", w) if pd else None
    audio_in -= _count(cached_details, "audio_tokens", where=w)
    image_in -= _count(cached_details, "image_tokens", where=w)
    if audio_in < 0 or image_in < 0:
        raise InvalidUsage(f"{w}: cached audio or image tokens exceed the audio or image tokens")
    return audio_in, image_in


def _openai_tools(usage: Mapping[str, Any], pd: _Details, w: str) -> dict[str, int]:
    """Per-request fees: LiteLLM's ``server_tool_use`` or the prompt details' web searches."""
    tools: dict[str, int] = {}
    stu = _sub(usage, "server_tool_use", w)
    if stu:
        where = f"{w}.server_tool_use"
        tools["web_search"] = _count(stu, "web_search_requests", where=where)
        tools["web_fetch"] = _count(stu, "web_fetch_requests", where=where)
        tools["tool_call"] = _count(stu, "tool_search_requests", where=where) + _count(
            stu, "browser_open_requests", where=where
        )
    elif pd and pd.get("web_search_requests"):
        tools["web_search"] = _count(pd, "web_search_requests", where=w)
    return tools


def _openai(usage: Mapping[str, Any], w: str) -> tuple[Tokens, str | None]:
    usage = _mapping(usage, w)
    prompt, output, pd, cd = _openai_form(usage, w)
    cached, written, writes = _openai_cache(usage, pd, w)
    audio_in, image_in = _openai_media_in(pd, w)
    uncached = prompt - cached - written
    if uncached < 0:
        raise InvalidUsage(
            f"{w}: cached ({cached}) and cache-write ({written}) tokens exceed the prompt"
            f" ({prompt})"
        )
    if audio_in + image_in > uncached:
        raise InvalidUsage(
            f"{w}: uncached audio and image tokens ({audio_in + image_in}) exceed the uncached"
            f" prompt ({uncached})"
        )
    tier = _tier(usage.get("service_tier"), f"{w}.service_tier")
    if usage.get("speed") == "fast":
        tier = "fast"
    tokens = Tokens(
        input_tokens=uncached - audio_in - image_in,
        input_audio_tokens=audio_in,
        input_image_tokens=image_in,
        output_tokens=output,
        cache_read_tokens=cached,
        cache_write_5m_tokens=writes["5m"],
        cache_write_30m_tokens=writes["30m"],
        cache_write_1h_tokens=writes["1h"],
        cache_write_12h_tokens=writes["12h"],
        reasoning_tokens=_count(cd, "reasoning_tokens", where=w),
        output_audio_tokens=_count(cd, "audio_tokens", where=w),
        output_image_tokens=_count(cd, "image_tokens", where=w),
        tool_calls=_tools(_openai_tools(usage, pd, w)),
    )
    return _check(tokens, w), tier


_RESPONSES_TOOLS = {
    "web_search_call": "web_search",
    "file_search_call": "file_search",
    "code_interpreter_call": "code_execution",
}


def _openai_response(obj: Mapping[str, Any], w: str) -> Parsed:
    """A whole Chat Completions or Responses object: its usage, outcome, tier and tool calls."""
    obj = _mapping(obj, w)
    kind = _response_kind(obj, w)
    usage = obj.get("usage")
    if usage is None:
        raise UsageNotFinal(
            f"{w} carries no usage (a stream without include_usage, or a response still in"
            " progress); send the usage when it is known"
        )
    tokens, usage_tier = _openai(_mapping(usage, f"{w}.usage"), f"{w}.usage")
    tier = _tier(obj.get("service_tier"), f"{w}.service_tier") or usage_tier
    if kind == "response":
        return _responses_outcome(obj, _with_output_tools(tokens, obj), tier, w)
    choices = obj.get("choices") or []
    if not isinstance(choices, list):
        raise UsageShapeMismatch(f"{w}.choices must be a list")
    reason = _worst([c.get("finish_reason") for c in choices if isinstance(c, Mapping)])
    return Parsed(tokens, reason, False, tier, source="openai_response")


def _response_kind(obj: Mapping[str, Any], w: str) -> str:
    """The object's ``object``; a usage object or anything else is refused as a mismatch."""
    kind = obj.get("object")
    if kind not in ("chat.completion", "chat.completion.chunk", "response"):
        if "prompt_tokens" in obj or "input_tokens" in obj:
            raise UsageShapeMismatch(
                f"{w} holds a usage object, not a response; send it as openai_usage"
            )
        raise UsageShapeMismatch(
            f"{w}.object must be 'chat.completion', 'chat.completion.chunk' or 'response'"
            f" (got {kind!r})"
        )
    return str(kind)


def _with_output_tools(tokens: Tokens, obj: Mapping[str, Any]) -> Tokens:
    """The tokens with the tool calls a Responses object's ``output`` items made added."""
    counts: dict[str, int] = {}
    for item in obj.get("output") or ():
        name = _RESPONSES_TOOLS.get(str(item.get("type"))) if isinstance(item, Mapping) else None
        if name:
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        return tokens
    merged = dict(tokens.tool_calls)
    for k, v in counts.items():
        merged[k] = merged.get(k, 0) + v
    return _replace_tools(tokens, merged)


def _responses_outcome(obj: Mapping[str, Any], tokens: Tokens, tier: str | None, w: str) -> Parsed:
    """A Responses object's outcome from its ``status``; one not final yet is refused."""
    status = obj.get("status")
    if status == "completed":
        return Parsed(tokens, "completed", False, tier, source="openai_response")
    if status in ("failed", "cancelled"):
        return Parsed(tokens, status, False, tier, source="openai_response")
    if status == "incomplete":
        details = obj.get("incomplete_details") or {}
        reason = details.get("reason") if isinstance(details, Mapping) else None
        reason = str(reason or "incomplete")
        refused = reason.lower() in REFUSAL_REASONS
        return Parsed(tokens, reason, not refused, tier, source="openai_response")
    raise UsageNotFinal(
        f"{w}.status is {status!r}; usage is final once the response is completed,"
        " incomplete, failed or cancelled"
    )
