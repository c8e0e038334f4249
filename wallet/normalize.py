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

from collections.abc import Callable, Mapping
from typing import Any

from plans.errors import InvalidUsage
from plans.prices import FEE_KINDS
from plans.rating import TOKEN_FIELDS, Tokens
from wallet.outcomes import failure_kind
from wallet.shapes import Parsed, UsageShapeMismatch, _check, _tools
from wallet.shapes_anthropic import _anthropic, _anthropic_message, from_anthropic
from wallet.shapes_gemini import _gemini, _gemini_response
from wallet.shapes_litellm import _litellm
from wallet.shapes_openai import _openai, _openai_response, from_openai

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


def _openai_usage(obj: Any, name: str) -> Parsed:
    tokens, tier = _openai(obj, name)
    return Parsed(tokens, service_tier=tier, source=name)


def _anthropic_usage(obj: Any, name: str) -> Parsed:
    tokens, tier = _anthropic(obj, name)
    return Parsed(tokens, service_tier=tier, source=name)


def _gemini_usage(obj: Any, name: str) -> Parsed:
    return Parsed(_gemini(obj, name), source=name)


#: The reader of each provider-object field: ``(object, field name) -> Parsed``.
_READERS: dict[str, Callable[[Any, str], Parsed]] = {
    "openai_usage": _openai_usage,
    "openai_response": _openai_response,
    "anthropic_usage": _anthropic_usage,
    "anthropic_message": _anthropic_message,
    "gemini_usage": _gemini_usage,
    "gemini_response": _gemini_response,
    "litellm_payload": _litellm,
}

#: The provider-object fields of a usage record.
PROVIDER_FIELDS = tuple(_READERS)


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
        reader = _READERS.get(name)
        if reader is None:
            raise InvalidUsage(f"unknown provider field {name}")
        return reader(obj, name)
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
    """Tokens of a record sent as canonical fields whose counts are known to be valid.

    The API's record schema has checked that they are non-negative integers: only how they
    relate is checked here. The gateway path's fast path; :func:`parse_usage` checks everything.

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


#: fee kinds a canonical record may count
TOOL_CALL_KINDS = FEE_KINDS
