"""The usage record and its result as the OpenAPI document describes them.

The gateway path does not validate records with these models (a record is checked on its own
with msgspec, so one bad record fails alone; see ``api/routes/usage_records.py``); they exist so the
document says exactly what a record may hold, with an example of every format, and what each
result carries. ``docs/usage-shapes.md`` explains how each provider object is read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


def _count(description: str) -> Any:
    return Field(default=None, ge=0, le=10**12, description=description)


_AT = "2026-11-29T10:00:00Z"

#: One example record per format (ids and accounts are placeholders).
RECORD_EXAMPLES: list[dict[str, Any]] = [
    {
        "id": "call-1",
        "account_id": "acc_1",
        "model": "gpt-5",
        "occurred_at": _AT,
        "input_tokens": 1200,
        "cache_read_tokens": 8000,
        "output_tokens": 400,
        "reasoning_tokens": 120,
        "service_tier": "priority",
        "tool_calls": {"web_search": 2},
    },
    {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "account_id": "acc_1",
        "model": "gpt-5",
        "occurred_at": _AT,
        "openai_response": {
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "object": "chat.completion",
            "created": 1741569952,
            "model": "gpt-5-2026-08-07",
            "service_tier": "flex",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello!"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 1200,
                "completion_tokens": 300,
                "total_tokens": 1500,
                "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 120},
            },
        },
    },
    {
        "id": "resp_67ccd2bed1ec8190b14f964abc054267",
        "account_id": "acc_1",
        "model": "gpt-5",
        "occurred_at": _AT,
        "openai_response": {
            "id": "resp_67ccd2bed1ec8190b14f964abc054267",
            "object": "response",
            "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"},
            "service_tier": "default",
            "output": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}],
            "usage": {
                "input_tokens": 5000,
                "input_tokens_details": {
                    "cached_tokens": 3000,
                    "cache_write_tokens": 1500,
                    "cache_write_tokens_details": {"ttl_30m_tokens": 1000, "ttl_12h_tokens": 500},
                },
                "output_tokens": 64,
                "output_tokens_details": {"reasoning_tokens": 64},
                "total_tokens": 5064,
            },
        },
    },
    {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "account_id": "acc_1",
        "model": "claude-sonnet-4-5",
        "occurred_at": _AT,
        "anthropic_message": {
            "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "Hi!"}],
            "stop_reason": "end_turn",
            "usage": {
                "input_tokens": 50,
                "output_tokens": 400,
                "cache_read_input_tokens": 8000,
                "cache_creation_input_tokens": 2000,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 500,
                    "ephemeral_1h_input_tokens": 1500,
                },
                "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 0},
                "service_tier": "batch",
            },
        },
    },
    {
        "id": "gemini-call-7",
        "account_id": "acc_1",
        "model": "gemini-2.5-pro",
        "occurred_at": _AT,
        "gemini_response": {
            "candidates": [{"content": {"role": "model", "parts": []}, "finishReason": "SAFETY"}],
            "usageMetadata": {
                "promptTokenCount": 250000,
                "cachedContentTokenCount": 200000,
                "candidatesTokenCount": 0,
                "thoughtsTokenCount": 180,
                "toolUsePromptTokenCount": 40,
                "totalTokenCount": 250220,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 250000}],
            },
            "modelVersion": "gemini-2.5-pro",
            "responseId": "abc",
        },
    },
    {
        "id": "litellm-6c3d1f0e",
        "account_id": "acc_1",
        "model": "claude-sonnet-4-5",
        "occurred_at": _AT,
        "litellm_payload": {
            "id": "6c3d1f0e",
            "call_type": "completion",
            "status": "success",
            "prompt_tokens": 10050,
            "completion_tokens": 400,
            "total_tokens": 10450,
            "model": "claude-sonnet-4-5",
            "metadata": {
                "usage_object": {
                    "prompt_tokens": 10050,
                    "completion_tokens": 400,
                    "prompt_tokens_details": {
                        "cached_tokens": 8000,
                        "cache_creation_tokens": 2000,
                        "cache_creation_token_details": {
                            "ephemeral_5m_input_tokens": 500,
                            "ephemeral_1h_input_tokens": 1500,
                        },
                    },
                    "cache_creation_input_tokens": 2000,
                    "cache_read_input_tokens": 8000,
                }
            },
        },
    },
]


class UsageRecordIn(BaseModel):
    """One usage record.

    Tokens come from exactly one source: the canonical fields (with ``tool_calls``), or ONE provider
    object (``openai_usage``, ``openai_response``, ``anthropic_usage``, ``anthropic_message``,
    ``gemini_usage``, ``gemini_response``, ``litellm_payload``). A provider object is read strictly:
    another format's keys, a whole response where a usage object belongs (or the reverse), or none
    of its format's keys is refused with ``usage_shape_mismatch``; an object without final usage
    with ``usage_not_final``. Whole response objects also give the finish reason (or status and
    incomplete details, or stop reason, or finishReason and promptFeedback) and the service tier;
    ``finish_reason`` and ``service_tier`` sent beside them must agree.

    Canonical input counts never overlap (``input_tokens`` is uncached text input); the output
    parts (``reasoning_tokens``, ``output_audio_tokens``, ``output_image_tokens``) are included
    in ``output_tokens``.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": RECORD_EXAMPLES},  # type: ignore[dict-item]
    )
    id: str = Field(
        min_length=1, max_length=200, description="chosen by the gateway; exactly once by id"
    )
    account_id: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=200, description="a model of the catalog")
    occurred_at: AwareDatetime = Field(description="when the call was made (prices in force)")
    input_tokens: int | None = _count("uncached text input")
    input_audio_tokens: int | None = _count("uncached audio input")
    input_image_tokens: int | None = _count("uncached image input")
    cache_read_tokens: int | None = _count("input read from the cache")
    cache_write_5m_tokens: int | None = _count("written to a 5 m cache")
    cache_write_30m_tokens: int | None = _count("written to a 30 m cache")
    cache_write_1h_tokens: int | None = _count("written to a 1 h cache")
    cache_write_12h_tokens: int | None = _count("written to a 12 h cache")
    output_tokens: int | None = _count("every output token")
    reasoning_tokens: int | None = _count("part of output_tokens")
    output_audio_tokens: int | None = _count("part of output_tokens")
    output_image_tokens: int | None = _count("part of output_tokens")
    tool_calls: (
        dict[Literal["web_search", "web_fetch", "code_execution", "file_search", "tool_call"], int]
        | None
    ) = Field(
        default=None,
        examples=[{"web_search": 2}],
        description="per-request fees counted (canonical records only)",
    )
    service_tier: str | None = Field(
        default=None,
        max_length=32,
        examples=["flex"],
        description="standard (also default, auto), flex, priority, batch, scale or fast; a"
        " tier the price in force does not define is refused (unpriced_service_tier), except"
        " batch, which takes the batch discount",
    )
    batch: bool = Field(default=False, description="the same as service_tier batch")
    upstream: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        examples=["azure-eu"],
        description="the upstream vendor that served the call: its cost card prices the"
        " record in the margin report",
    )
    http_status: int = Field(default=200, ge=100, le=599)
    finish_reason: str | None = Field(
        default=None,
        max_length=100,
        description="any provider's finish or stop reason; classifies failed requests",
    )
    truncated: bool = False
    authorization_id: str | None = Field(default=None, max_length=64)
    tags: dict[str, str] = Field(default_factory=dict, max_length=50)
    openai_usage: dict[str, Any] | None = Field(
        default=None,
        description="Chat Completions or Responses usage (LiteLLM's Usage too)",
        examples=[RECORD_EXAMPLES[1]["openai_response"]["usage"]],
    )
    openai_response: dict[str, Any] | None = Field(
        default=None,
        description="a whole chat.completion (or its last chunk with usage) or response",
        examples=[RECORD_EXAMPLES[2]["openai_response"]],
    )
    anthropic_usage: dict[str, Any] | None = Field(
        default=None,
        description="Messages usage (cache_creation TTLs, server_tool_use, service_tier)",
        examples=[RECORD_EXAMPLES[3]["anthropic_message"]["usage"]],
    )
    anthropic_message: dict[str, Any] | None = Field(
        default=None,
        description="a whole Messages response (usage and stop_reason)",
        examples=[RECORD_EXAMPLES[3]["anthropic_message"]],
    )
    gemini_usage: dict[str, Any] | None = Field(
        default=None,
        description="usageMetadata, camelCase or snake_case",
        examples=[RECORD_EXAMPLES[4]["gemini_response"]["usageMetadata"]],
    )
    gemini_response: dict[str, Any] | None = Field(
        default=None,
        description="a whole GenerateContentResponse (usageMetadata, finishReason, promptFeedback)",
        examples=[RECORD_EXAMPLES[4]["gemini_response"]],
    )
    litellm_payload: dict[str, Any] | None = Field(
        default=None,
        description="LiteLLM's StandardLoggingPayload (kwargs['standard_logging_object'])",
        examples=[RECORD_EXAMPLES[5]["litellm_payload"]],
    )


#: The items schema of ``records`` in the OpenAPI document.
RECORD_SCHEMA: dict[str, Any] = UsageRecordIn.model_json_schema()


class TokensOut(BaseModel):
    """The token breakdown a record was rated on: canonical fields, zero counts left out."""

    input_tokens: int | None = None
    input_audio_tokens: int | None = None
    input_image_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_5m_tokens: int | None = None
    cache_write_30m_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    cache_write_12h_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    output_audio_tokens: int | None = None
    output_image_tokens: int | None = None
    tool_calls: dict[str, int] | None = None


class ChargeOut(BaseModel):
    """What the record was rated at, by component, before the failed-request policy and burn-down.

    ``rated`` is the components' sum; ``billed`` and ``credited`` say what was charged.
    """

    rated: str = Field(examples=["0.0123"], description="decimal string")
    currency: str
    service_tier: str = Field(examples=["standard", "priority"])
    context_tier: int | None = Field(
        default=None, description="above_input_tokens of the context tier that applied"
    )
    components: dict[str, str] = Field(
        examples=[{"input": "0.0036", "cache_read": "0.0024", "output": "0.006"}],
        description="decimal strings by component: input, input_audio, input_image,"
        " cache_read, cache_write_5m/30m/1h/12h, output, reasoning, output_audio,"
        " output_image, the fee kinds, and a negative batch_discount",
    )
