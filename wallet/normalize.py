"""Usage records from gateways, normalized to one shape (pure; no database).

A record carries its tokens in exactly one form: the canonical fields, or one provider object.
Each provider object is read strictly: a shape that has none of the keys its format needs, or
keys of another format, is refused with ``usage_shape_mismatch`` (never charged 0 because it was
not understood). ``docs/usage-shapes.md`` lists every shape and how it is read.

* ``openai_usage``: Chat Completions ``usage`` (``prompt_tokens`` INCLUDES cached and written
  tokens; LiteLLM's ``Usage`` too) or Responses ``usage`` (``input_tokens`` the same);
* ``openai_response``: a whole ``chat.completion`` (or its last ``chat.completion.chunk``) or
  ``response`` object: usage, finish reason or status, service tier, tool calls;
* ``anthropic_usage``: Messages ``usage``: ``input_tokens`` EXCLUDES cache reads and writes;
  ``cache_creation`` splits writes by TTL; ``server_tool_use``; ``service_tier``, ``speed``;
* ``anthropic_message``: a whole ``message``: its usage and ``stop_reason``;
* ``gemini_usage``: ``usageMetadata`` (camelCase or snake_case): ``promptTokenCount``
  INCLUDES cached tokens; thoughts and tool-use prompt tokens are counted apart;
* ``gemini_response``: a whole ``GenerateContentResponse``: usage, ``finishReason``,
  ``promptFeedback``;
* ``litellm_payload``: LiteLLM's ``StandardLoggingPayload``.

The outcome of the request is classified into one failure kind (or none) for the failed-request
policy: ``provider_error``, ``provider_truncation``, ``refusal``, ``client_disconnect``,
``empty_completion``; every finish reason of every format maps to one (:func:`failure_kind`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from plans.errors import InvalidUsage
from plans.prices import FEE_KINDS, SERVICE_TIERS, STANDARD_TIERS
from plans.rating import TOKEN_FIELDS, Tokens

__all__ = [
    "PROVIDER_FIELDS",
    "Parsed",
    "Tokens",
    "UsageShapeMismatch",
    "canonical_tokens",
    "failure_kind",
    "from_anthropic",
    "from_openai",
    "parse_usage",
]

#: Finish reasons (lower case) of every format, by failure kind. Anything else is a success.
PROVIDER_ERROR_REASONS = frozenset(
    {
        "error",
        "failed",
        "failure",
        "server_error",
        # Gemini
        "malformed_function_call",
        "unexpected_tool_call",
        "too_many_tool_calls",
        "finish_reason_unspecified",
        "other",
        "image_other",
        "no_image",
        "missing_thought_signature",
    }
)
CLIENT_DISCONNECT_REASONS = frozenset({"cancelled", "canceled", "client_disconnect"})
REFUSAL_REASONS = frozenset(
    {
        "content_filter",
        "refusal",
        # Gemini candidates and prompt feedback
        "safety",
        "recitation",
        "prohibited_content",
        "blocklist",
        "spii",
        "language",
        "image_safety",
        "image_prohibited_content",
        "image_recitation",
        "prompt_blocked",
    }
)
TRUNCATION_REASONS = frozenset(
    {"length", "max_tokens", "max_output_tokens", "model_context_window_exceeded"}
)

#: The provider-object fields of a usage record.
PROVIDER_FIELDS = (
    "openai_usage",
    "openai_response",
    "anthropic_usage",
    "anthropic_message",
    "gemini_usage",
    "gemini_response",
    "litellm_payload",
)


class UsageShapeMismatch(InvalidUsage):
    """A provider object that is not the shape its field names (another format's keys, a whole
    response where a usage object belongs, or none of the keys the format needs)."""

    code = "usage_shape_mismatch"


class UsageNotFinal(InvalidUsage):
    """A provider object that does not carry the request's final usage yet."""

    code = "usage_not_final"


@dataclass(frozen=True, slots=True)
class Parsed:
    """What a record's usage source says: tokens, and what the provider object says about the
    outcome (``None``: it says nothing; the record's own fields then apply)."""

    tokens: Tokens
    finish_reason: str | None = None
    truncated: bool = False
    service_tier: str | None = None
    http_status: int | None = None
    source: str = "fields"


# -- helpers ------------------------------------------------------------------------------


def _count(obj: Mapping[str, Any] | None, key: str, *, where: str) -> int:
    if obj is None:
        return 0
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidUsage(f"{where}.{key} must be a non-negative integer; got {value!r}")
    return value


def _sub(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidUsage(f"{where}.{key} must be an object")
    return value


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UsageShapeMismatch(f"{where} must be an object")
    return value


def _tier(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidUsage(f"{where} must be a string")
    tier = value.lower()
    if tier in STANDARD_TIERS:
        return "standard"
    if tier not in SERVICE_TIERS:
        # a tier we do not know is not priced as standard by mistake
        raise InvalidUsage(
            f"{where} {value!r} is not a known service tier"
            f" ({', '.join(sorted(STANDARD_TIERS | set(SERVICE_TIERS)))})"
        )
    return tier


def _tools(counts: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((k, v) for k, v in counts.items() if v))


def _check(tokens: Tokens, where: str) -> Tokens:
    return tokens.check(where)


def _foreign(obj: Mapping[str, Any], keys: frozenset[str], where: str, hint: str) -> None:
    found = sorted(k for k in obj if k in keys)
    if found:
        raise UsageShapeMismatch(f"{where} has {', '.join(found)}: {hint}")


_ANTHROPIC_ONLY = frozenset(
    {
        "cache_creation",
        "speed",
        "inference_geo",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "server_tool_use",
        "service_tier",
    }
)
_GEMINI_KEYS = frozenset(
    {
        "promptTokenCount",
        "candidatesTokenCount",
        "totalTokenCount",
        "cachedContentTokenCount",
        "thoughtsTokenCount",
        "prompt_token_count",
        "candidates_token_count",
        "total_token_count",
        "usageMetadata",
        "usage_metadata",
        "candidates",
    }
)
_OPENAI_RESPONSE_KEYS = frozenset({"choices", "object", "usage", "output", "created_at", "created"})
_ANTHROPIC_MESSAGE_KEYS = frozenset({"content", "stop_reason", "role", "usage", "type"})
_SLP_KEYS = frozenset({"standard_logging_object", "response_cost", "status_fields", "call_type"})


# -- OpenAI -------------------------------------------------------------------------------


def _openai_writes(
    written: int, details: Mapping[str, Any] | None, *, where: str, short: str
) -> dict[str, int]:
    """Cache writes by TTL: from a TTL split (OpenAI ``ttl_30m_tokens``/``ttl_12h_tokens``,
    LiteLLM ``ephemeral_*_input_tokens``), else all at ``short`` (the provider's default)."""
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
    """Normalize an OpenAI Chat Completions or Responses ``usage`` object (LiteLLM's
    ``Usage`` included: its Anthropic extras and TTL split are read).

    Raises:
        UsageShapeMismatch: another format's usage, or a whole response.
        InvalidUsage: negative or non-integer counts, parts exceeding their whole.
    """
    return _openai(usage, where)[0]


def _openai(usage: Mapping[str, Any], w: str) -> tuple[Tokens, str | None]:
    usage = _mapping(usage, w)
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
    chat = "prompt_tokens" in usage or "completion_tokens" in usage
    if chat:
        prompt = _count(usage, "prompt_tokens", where=w)
        output = _count(usage, "completion_tokens", where=w)
        pd, cd = (
            _sub(usage, "prompt_tokens_details", w),
            _sub(usage, "completion_tokens_details", w),
        )
    elif "input_tokens" in usage and "output_tokens" in usage:
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
        prompt = _count(usage, "input_tokens", where=w)
        output = _count(usage, "output_tokens", where=w)
        pd, cd = _sub(usage, "input_tokens_details", w), _sub(usage, "output_tokens_details", w)
    else:
        raise UsageShapeMismatch(
            f"{w} has none of prompt_tokens, completion_tokens (Chat Completions) or"
            " input_tokens and output_tokens (Responses)"
        )
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
            if value == 0:
                if key == "cache_read_input_tokens":
                    cached = top
                else:
                    written = top
            else:
                raise InvalidUsage(f"{w}: {key} ({top}) differs from the details ({value})")
    anthropic_via_litellm = "cache_creation_input_tokens" in usage
    details = _sub(pd, "cache_write_tokens_details", w) if pd else None
    if details is None and pd:
        details = _sub(pd, "cache_creation_token_details", w)
    writes = _openai_writes(
        written, details, where=w, short="5m" if anthropic_via_litellm else "30m"
    )
    reasoning = _count(cd, "reasoning_tokens", where=w)
    audio_in = _count(pd, "audio_tokens", where=w)
    image_in = _count(pd, "image_tokens", where=w)
    cached_details = _sub(pd, "cached_tokens_details", w) if pd else None
    audio_in -= _count(cached_details, "audio_tokens", where=w)
    image_in -= _count(cached_details, "image_tokens", where=w)
    if audio_in < 0 or image_in < 0:
        raise InvalidUsage(f"{w}: cached audio or image tokens exceed the audio or image tokens")
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
    tools: dict[str, int] = {}
    stu = _sub(usage, "server_tool_use", w)
    if stu:
        tools["web_search"] = _count(stu, "web_search_requests", where=f"{w}.server_tool_use")
        tools["web_fetch"] = _count(stu, "web_fetch_requests", where=f"{w}.server_tool_use")
        tools["tool_call"] = _count(
            stu, "tool_search_requests", where=f"{w}.server_tool_use"
        ) + _count(stu, "browser_open_requests", where=f"{w}.server_tool_use")
    elif pd and pd.get("web_search_requests"):
        tools["web_search"] = _count(pd, "web_search_requests", where=w)
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
        reasoning_tokens=reasoning,
        output_audio_tokens=_count(cd, "audio_tokens", where=w),
        output_image_tokens=_count(cd, "image_tokens", where=w),
        tool_calls=_tools(tools),
    )
    return _check(tokens, w), tier


_CHAT_FAILURE_ORDER = ("provider_error", "client_disconnect", "refusal", "provider_truncation")


def _worst(reasons: Sequence[str | None]) -> str | None:
    """The finish reason of a response with several choices: the most severe failure."""
    present = [r for r in reasons if r is not None]
    for kind in _CHAT_FAILURE_ORDER:
        for r in present:
            if _kind_of(r.lower()) == kind:
                return r
    return present[0] if present else None


_RESPONSES_TOOLS = {
    "web_search_call": "web_search",
    "file_search_call": "file_search",
    "code_interpreter_call": "code_execution",
}


def _openai_response(obj: Mapping[str, Any], w: str) -> Parsed:
    obj = _mapping(obj, w)
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
    usage = obj.get("usage")
    if usage is None:
        raise UsageNotFinal(
            f"{w} carries no usage (a stream without include_usage, or a response still in"
            " progress); send the usage when it is known"
        )
    tokens, usage_tier = _openai(_mapping(usage, f"{w}.usage"), f"{w}.usage")
    tier = _tier(obj.get("service_tier"), f"{w}.service_tier") or usage_tier
    if kind == "response":
        status = obj.get("status")
        counts: dict[str, int] = {}
        for item in obj.get("output") or ():
            name = (
                _RESPONSES_TOOLS.get(str(item.get("type"))) if isinstance(item, Mapping) else None
            )
            if name:
                counts[name] = counts.get(name, 0) + 1
        if counts:
            merged = dict(tokens.tool_calls)
            for k, v in counts.items():
                merged[k] = merged.get(k, 0) + v
            tokens = _replace_tools(tokens, merged)
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
    choices = obj.get("choices") or []
    if not isinstance(choices, list):
        raise UsageShapeMismatch(f"{w}.choices must be a list")
    reason = _worst([c.get("finish_reason") for c in choices if isinstance(c, Mapping)])
    return Parsed(tokens, reason, False, tier, source="openai_response")


def _replace_tools(tokens: Tokens, counts: Mapping[str, int]) -> Tokens:
    values = {name: getattr(tokens, name) for name in TOKEN_FIELDS}
    return Tokens(**values, tool_calls=_tools(counts))


# -- Anthropic ----------------------------------------------------------------------------


def from_anthropic(usage: Mapping[str, Any], *, where: str = "anthropic_usage") -> Tokens:
    """Normalize an Anthropic Messages ``usage`` object (cache fields are additive).

    Raises:
        UsageShapeMismatch: another format's usage, or a whole message.
        InvalidUsage: negative or non-integer counts, a TTL split that does not add up.
    """
    return _anthropic(usage, where)[0]


def _anthropic(usage: Mapping[str, Any], w: str) -> tuple[Tokens, str | None]:
    usage = _mapping(usage, w)
    if (
        usage.get("type") == "message"
        or "content" in usage
        or isinstance(usage.get("usage"), Mapping)
    ):
        raise UsageShapeMismatch(
            f"{w} holds a whole message, not its usage; send it as anthropic_message"
            " (usage and stop_reason are read from it) or send its usage"
        )
    _foreign(
        usage,
        _GEMINI_KEYS,
        w,
        "this is Gemini usageMetadata; send it as gemini_usage",
    )
    _foreign(
        usage,
        frozenset(
            {
                "prompt_tokens",
                "completion_tokens",
                "total_tokens",
                "input_tokens_details",
                "prompt_tokens_details",
                "completion_tokens_details",
            }
        ),
        w,
        "this is an OpenAI usage object (its input tokens include cached tokens); send it as"
        " openai_usage",
    )
    if "input_tokens" not in usage or "output_tokens" not in usage:
        raise UsageShapeMismatch(f"{w} needs input_tokens and output_tokens")
    creation = _count(usage, "cache_creation_input_tokens", where=w)
    split = _sub(usage, "cache_creation", w)
    w5 = _count(split, "ephemeral_5m_input_tokens", where=w)
    w1 = _count(split, "ephemeral_1h_input_tokens", where=w)
    if split is not None and (w5 or w1):
        if creation and w5 + w1 != creation:
            raise InvalidUsage(
                f"{w}: cache_creation 5m+1h ({w5 + w1}) differs from cache_creation_input_tokens"
                f" ({creation})"
            )
    else:
        w5, w1 = creation, 0
    od = _sub(usage, "output_tokens_details", w)
    stu = _sub(usage, "server_tool_use", w)
    tools = {
        "web_search": _count(stu, "web_search_requests", where=f"{w}.server_tool_use"),
        "web_fetch": _count(stu, "web_fetch_requests", where=f"{w}.server_tool_use"),
        "code_execution": _count(stu, "code_execution_requests", where=f"{w}.server_tool_use"),
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


# -- Gemini -------------------------------------------------------------------------------

_CAMEL = re.compile(r"_([a-z])")


def _camel(obj: Any) -> Any:
    """google-genai's pydantic types dump snake_case; the REST API speaks camelCase."""
    if isinstance(obj, Mapping):
        return {_CAMEL.sub(lambda m: m.group(1).upper(), str(k)): _camel(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_camel(v) for v in obj]
    return obj


def _modalities(details: object, where: str) -> dict[str, int]:
    out: dict[str, int] = {}
    if details is None:
        return out
    if not isinstance(details, list):
        raise InvalidUsage(f"{where} must be a list of {{modality, tokenCount}}")
    for item in details:
        if not isinstance(item, Mapping):
            raise InvalidUsage(f"{where} must be a list of {{modality, tokenCount}}")
        m = str(item.get("modality") or "TEXT").upper()
        out[m] = out.get(m, 0) + _count(item, "tokenCount", where=where)
    return out


def _gemini(meta: Mapping[str, Any], w: str) -> Tokens:
    meta = _camel(_mapping(meta, w))
    if "candidates" in meta or "usageMetadata" in meta:
        raise UsageShapeMismatch(
            f"{w} holds a whole GenerateContentResponse; send it as gemini_response or send its"
            " usageMetadata"
        )
    _foreign(
        meta,
        frozenset({"promptTokens", "completionTokens", "inputTokens", "outputTokens"}),
        w,
        "this is an OpenAI or Anthropic usage object; send it as openai_usage or anthropic_usage",
    )
    if not ({"promptTokenCount", "candidatesTokenCount", "totalTokenCount"} & set(meta)):
        raise UsageShapeMismatch(
            f"{w} has none of promptTokenCount, candidatesTokenCount, totalTokenCount"
        )
    prompt = _count(meta, "promptTokenCount", where=w)
    cached = _count(meta, "cachedContentTokenCount", where=w)
    tool_prompt = _count(meta, "toolUsePromptTokenCount", where=w)
    candidates = _count(meta, "candidatesTokenCount", where=w)
    thoughts = _count(meta, "thoughtsTokenCount", where=w)
    if cached > prompt:
        raise InvalidUsage(f"{w}: cachedContentTokenCount ({cached}) exceeds promptTokenCount")
    pin = _modalities(meta.get("promptTokensDetails"), f"{w}.promptTokensDetails")
    pcache = _modalities(meta.get("cacheTokensDetails"), f"{w}.cacheTokensDetails")
    ptool = _modalities(meta.get("toolUsePromptTokensDetails"), f"{w}.toolUsePromptTokensDetails")
    pout = _modalities(meta.get("candidatesTokensDetails"), f"{w}.candidatesTokensDetails")
    audio_in = pin.get("AUDIO", 0) - pcache.get("AUDIO", 0) + ptool.get("AUDIO", 0)
    image_in = pin.get("IMAGE", 0) - pcache.get("IMAGE", 0) + ptool.get("IMAGE", 0)
    uncached = prompt - cached + tool_prompt
    if audio_in < 0 or image_in < 0 or audio_in + image_in > uncached:
        raise InvalidUsage(f"{w}: the modality details do not add up to the prompt counts")
    out_audio, out_image = pout.get("AUDIO", 0), pout.get("IMAGE", 0)
    if out_audio + out_image > candidates:
        raise InvalidUsage(f"{w}: candidatesTokensDetails exceed candidatesTokenCount")
    tokens = Tokens(
        input_tokens=uncached - audio_in - image_in,
        input_audio_tokens=audio_in,
        input_image_tokens=image_in,
        cache_read_tokens=cached,
        output_tokens=candidates + thoughts,
        reasoning_tokens=thoughts,
        output_audio_tokens=out_audio,
        output_image_tokens=out_image,
    )
    return _check(tokens, w)


def _gemini_response(obj: Mapping[str, Any], w: str) -> Parsed:
    obj = _camel(_mapping(obj, w))
    if "promptTokenCount" in obj or "candidatesTokenCount" in obj:
        raise UsageShapeMismatch(
            f"{w} holds usageMetadata, not a response; send it as gemini_usage"
        )
    meta = obj.get("usageMetadata")
    if meta is None:
        if "candidates" not in obj and "promptFeedback" not in obj:
            raise UsageShapeMismatch(f"{w} has none of usageMetadata, candidates, promptFeedback")
        raise UsageNotFinal(f"{w} carries no usageMetadata; send the chunk that has it")
    tokens = _gemini(meta, f"{w}.usageMetadata")
    feedback = obj.get("promptFeedback")
    if isinstance(feedback, Mapping) and feedback.get("blockReason"):
        block = str(feedback["blockReason"]).lower()
        blocked = block if block in REFUSAL_REASONS else "prompt_blocked"
        return Parsed(tokens, blocked, False, None, source="gemini_response")
    candidates = obj.get("candidates") or []
    if not isinstance(candidates, list):
        raise UsageShapeMismatch(f"{w}.candidates must be a list")
    reason = _worst([c.get("finishReason") for c in candidates if isinstance(c, Mapping)])
    return Parsed(tokens, reason, False, None, source="gemini_response")


# -- LiteLLM ------------------------------------------------------------------------------


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


# -- entry point --------------------------------------------------------------------------


def parse_usage(
    fields: Mapping[str, int | None],
    provider: Mapping[str, Any],
    *,
    tool_calls: Mapping[str, int] | None = None,
) -> Parsed:
    """Tokens of one record from its canonical fields or its one provider object.

    Args:
        fields: the canonical token fields sent (``None`` for those not sent).
        provider: the provider fields of :data:`PROVIDER_FIELDS` that were sent (not ``None``).
        tool_calls: the record's canonical ``tool_calls`` counts.

    Raises:
        InvalidUsage: none or several sources, or bad counts.
        UsageShapeMismatch: a provider object that is not its field's shape.
        UsageNotFinal: a provider object without final usage.
    """
    sent = {k: v for k, v in fields.items() if v is not None}
    if len(provider) > 1:
        raise InvalidUsage(
            f"send one provider object, not {len(provider)} ({', '.join(sorted(provider))})"
        )
    if provider:
        if sent or tool_calls:
            raise InvalidUsage("send token fields (and tool_calls) or a provider object, not both")
        ((name, obj),) = provider.items()
        if name == "openai_usage":
            tokens, tier = _openai(obj, name)
            return Parsed(tokens, service_tier=tier, source=name)
        if name == "anthropic_usage":
            tokens, tier = _anthropic(obj, name)
            return Parsed(tokens, service_tier=tier, source=name)
        if name == "gemini_usage":
            return Parsed(_gemini(obj, name), source=name)
        if name == "openai_response":
            return _openai_response(obj, name)
        if name == "anthropic_message":
            return _anthropic_message(obj, name)
        if name == "gemini_response":
            return _gemini_response(obj, name)
        if name == "litellm_payload":
            return _litellm(obj, name)
        raise InvalidUsage(f"unknown provider field {name}")
    tokens = Tokens(
        **{k: int(sent.get(k) or 0) for k in TOKEN_FIELDS},
        tool_calls=_tools(dict(tool_calls or {})),
    )
    return Parsed(_check(tokens, "usage"))


def canonical_tokens(
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int,
    cache_write_5m_tokens: int,
    cache_write_1h_tokens: int,
    reasoning_tokens: int,
    cache_write_30m_tokens: int,
    cache_write_12h_tokens: int,
    input_audio_tokens: int,
    input_image_tokens: int,
    output_audio_tokens: int,
    output_image_tokens: int,
    tool_calls: Mapping[str, int] | None,
) -> Tokens:
    """Tokens of a record sent as canonical fields whose counts are already known to be
    non-negative integers (the API's record schema checks them): only how they relate is
    checked here. The gateway path's fast path; :func:`parse_usage` checks everything.

    Raises:
        InvalidUsage: output parts above the output, an unknown tool-call kind.
    """
    if reasoning_tokens + output_audio_tokens + output_image_tokens > output_tokens:
        raise InvalidUsage(
            "usage: reasoning, audio and image output are parts of the output tokens and"
            f" cannot exceed them ({output_tokens})",
            field="reasoning_tokens",
        )
    calls: tuple[tuple[str, int], ...] = ()
    if tool_calls:
        for kind in tool_calls:
            if kind not in FEE_KINDS:
                raise InvalidUsage(
                    f"usage: unknown tool call kind {kind!r}; known: {', '.join(FEE_KINDS)}",
                    field="tool_calls",
                )
        calls = _tools(tool_calls)
    return Tokens(
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_write_5m_tokens,
        cache_write_1h_tokens,
        reasoning_tokens,
        cache_write_30m_tokens,
        cache_write_12h_tokens,
        input_audio_tokens,
        input_image_tokens,
        output_audio_tokens,
        output_image_tokens,
        calls,
    )


def _kind_of(reason: str) -> str | None:
    if reason in PROVIDER_ERROR_REASONS:
        return "provider_error"
    if reason in CLIENT_DISCONNECT_REASONS:
        return "client_disconnect"
    if reason in REFUSAL_REASONS:
        return "refusal"
    if reason in TRUNCATION_REASONS:
        return "provider_truncation"
    return None


def failure_kind(
    *, http_status: int, finish_reason: str | None, truncated: bool, output_tokens: int
) -> str | None:
    """Classify a request's outcome for the failed-request policy (None: a normal success).

    In order: HTTP 5xx or an error finish reason → ``provider_error``; HTTP 499 or a cancel →
    ``client_disconnect``; a content filter, refusal or safety block → ``refusal``;
    ``truncated`` or a length finish reason → ``provider_truncation``; no output tokens with a
    finish reason or a 4xx status → ``empty_completion``. The reason sets above list every
    format's values.
    """
    reason = finish_reason.lower() if finish_reason else ""
    if http_status >= 500:
        return "provider_error"
    kind = _kind_of(reason) if reason else None
    if kind == "provider_error":
        return kind
    if http_status == 499 or kind == "client_disconnect":
        return "client_disconnect"
    if kind == "refusal":
        return kind
    if truncated or kind == "provider_truncation":
        return "provider_truncation"
    if output_tokens == 0 and (finish_reason is not None or 400 <= http_status < 500):
        # a generation that produced nothing (it reported how it finished, or failed with a
        # client error); a call with no finish reason and no output, such as an embedding or
        # an input-only request, is a normal success
        return "empty_completion"
    return None


#: fee kinds a canonical record may count
TOOL_CALL_KINDS = FEE_KINDS
