"""Usage records from gateways, normalized to one shape (pure; no database).

The canonical token fields never overlap: ``input_tokens`` is input billed at the input rate only
(no cache reads or writes); ``reasoning_tokens`` is the part of ``output_tokens`` the rate card
may price apart. Provider objects are converted here:

* OpenAI Chat Completions ``usage``: ``prompt_tokens`` INCLUDES ``cached_tokens`` (and 2026
  ``cache_write_tokens``), ``completion_tokens`` includes ``reasoning_tokens``.
* OpenAI Responses ``usage``: the same with ``input_tokens``/``output_tokens`` names.
* Anthropic Messages ``usage``: ``input_tokens`` EXCLUDES cache reads and writes, which come as
  ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` (5 m / 1 h split in
  ``cache_creation``); ``output_tokens`` includes thinking.

The outcome of the request is classified into one failure kind (or none) for the failed-request
policy: ``provider_error``, ``provider_truncation``, ``refusal``, ``client_disconnect``,
``empty_completion``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plans.errors import InvalidUsage

FAILURE_KINDS = (
    "provider_error",
    "provider_truncation",
    "refusal",
    "client_disconnect",
    "empty_completion",
)
_TRUNCATION_REASONS = {"length", "max_tokens", "max_output_tokens", "model_context_window_exceeded"}
_REFUSAL_REASONS = {"content_filter", "refusal"}


@dataclass(frozen=True, slots=True)
class Tokens:
    """Non-overlapping token counts of one request."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total(self) -> int:
        """Every token counted once."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
        )


def _count(obj: Mapping[str, Any] | None, key: str, *, where: str) -> int:
    if obj is None:
        return 0
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidUsage(f"{where}.{key} must be a non-negative integer; got {value!r}")
    return value


def _sub(obj: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidUsage(f"{key} must be an object")
    return value


def _check(tokens: Tokens, where: str) -> Tokens:
    if tokens.reasoning_tokens > tokens.output_tokens:
        raise InvalidUsage(
            f"{where}: reasoning tokens ({tokens.reasoning_tokens}) exceed output tokens"
            f" ({tokens.output_tokens})"
        )
    return tokens


def from_openai(usage: Mapping[str, Any]) -> Tokens:
    """Normalize an OpenAI Chat Completions or Responses ``usage`` object.

    Raises:
        InvalidUsage: negative or non-integer counts, cached tokens exceeding the prompt.
    """
    w = "openai_usage"
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        prompt = _count(usage, "prompt_tokens", where=w)
        output = _count(usage, "completion_tokens", where=w)
        pd, cd = _sub(usage, "prompt_tokens_details"), _sub(usage, "completion_tokens_details")
    else:
        prompt = _count(usage, "input_tokens", where=w)
        output = _count(usage, "output_tokens", where=w)
        pd, cd = _sub(usage, "input_tokens_details"), _sub(usage, "output_tokens_details")
    cached = _count(pd, "cached_tokens", where=w)
    written = _count(pd, "cache_write_tokens", where=w)
    reasoning = _count(cd, "reasoning_tokens", where=w)
    if cached + written > prompt:
        raise InvalidUsage(
            f"{w}: cached ({cached}) and cache-write ({written}) tokens"
            f" exceed the prompt ({prompt})"
        )
    return _check(
        Tokens(
            input_tokens=prompt - cached - written,
            output_tokens=output,
            cache_read_tokens=cached,
            cache_write_5m_tokens=written,
            reasoning_tokens=reasoning,
        ),
        w,
    )


def from_anthropic(usage: Mapping[str, Any]) -> Tokens:
    """Normalize an Anthropic Messages ``usage`` object (cache fields are additive).

    Raises:
        InvalidUsage: negative or non-integer counts, a TTL split that does not add up.
    """
    w = "anthropic_usage"
    creation = _count(usage, "cache_creation_input_tokens", where=w)
    split = _sub(usage, "cache_creation")
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
    od = _sub(usage, "output_tokens_details")
    return _check(
        Tokens(
            input_tokens=_count(usage, "input_tokens", where=w),
            output_tokens=_count(usage, "output_tokens", where=w),
            cache_read_tokens=_count(usage, "cache_read_input_tokens", where=w),
            cache_write_5m_tokens=w5,
            cache_write_1h_tokens=w1,
            reasoning_tokens=_count(od, "thinking_tokens", where=w),
        ),
        w,
    )


def failure_kind(
    *, http_status: int, finish_reason: str | None, truncated: bool, output_tokens: int
) -> str | None:
    """Classify a request's outcome for the failed-request policy (None: a normal success).

    In order: HTTP 5xx or an error finish reason → ``provider_error``; HTTP 499 or a cancel →
    ``client_disconnect``; a content filter or refusal → ``refusal``; ``truncated`` or a length
    finish reason → ``provider_truncation``; no output tokens with a finish reason or a 4xx
    status → ``empty_completion``.
    """
    reason = (finish_reason or "").lower()
    if http_status >= 500 or reason in {"error", "failed", "server_error"}:
        return "provider_error"
    if http_status == 499 or reason in {"cancelled", "canceled", "client_disconnect"}:
        return "client_disconnect"
    if reason in _REFUSAL_REASONS:
        return "refusal"
    if truncated or reason in _TRUNCATION_REASONS:
        return "provider_truncation"
    if output_tokens == 0 and (finish_reason is not None or 400 <= http_status < 500):
        # a generation that produced nothing (it reported how it finished, or failed with a
        # client error); a call with no finish reason and no output, such as an embedding or
        # an input-only request, is a normal success
        return "empty_completion"
    return None
