"""How a request ended, for the failed-request policy (pure).

Every finish reason of every format maps to one failure kind (or none: a success).
"""

from __future__ import annotations

from collections.abc import Sequence

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


_CHAT_FAILURE_ORDER = ("provider_error", "client_disconnect", "refusal", "provider_truncation")


def _worst(reasons: Sequence[str | None]) -> str | None:
    """The finish reason of a response with several choices: the most severe failure."""
    present = [r for r in reasons if r is not None]
    for kind in _CHAT_FAILURE_ORDER:
        for r in present:
            if _kind_of(r.lower()) == kind:
                return r
    return present[0] if present else None
