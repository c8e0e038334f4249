import pytest

from plans.errors import InvalidUsage
from wallet.normalize import Tokens, failure_kind, from_anthropic, from_openai


def test_openai_chat_prompt_includes_cached_tokens():
    t = from_openai(
        {
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 1000},
            "completion_tokens_details": {"reasoning_tokens": 120},
        }
    )
    assert t == Tokens(
        input_tokens=200, output_tokens=300, cache_read_tokens=1000, reasoning_tokens=120
    )
    assert t.total == 1500  # nothing counted twice


def test_openai_responses_shape_with_cache_writes():
    t = from_openai(
        {
            "input_tokens": 5000,
            "output_tokens": 10,
            "input_tokens_details": {"cached_tokens": 3000, "cache_write_tokens": 1500},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
    )
    # OpenAI writes without a TTL split are its default (30-minute) retention
    assert (t.input_tokens, t.cache_read_tokens, t.cache_write_30m_tokens) == (500, 3000, 1500)
    assert t.cache_write_5m_tokens == 0


def test_anthropic_input_excludes_cache_reads_and_writes():
    t = from_anthropic(
        {
            "input_tokens": 50,
            "output_tokens": 400,
            "cache_read_input_tokens": 8000,
            "cache_creation_input_tokens": 2000,
            "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1500},
        }
    )
    assert t == Tokens(
        input_tokens=50,
        output_tokens=400,
        cache_read_tokens=8000,
        cache_write_5m_tokens=500,
        cache_write_1h_tokens=1500,
    )
    assert t.total == 10450
    plain = from_anthropic(
        {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 7}
    )
    assert plain.cache_write_5m_tokens == 7


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -1, "completion_tokens": 1},
        {
            "prompt_tokens": 10,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 11},
        },
        {
            "prompt_tokens": 10,
            "completion_tokens": 1,
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
        {"prompt_tokens": "10", "completion_tokens": 1},
    ],
)
def test_bad_openai_usage_is_rejected(usage):
    with pytest.raises(InvalidUsage):
        from_openai(usage)


@pytest.mark.parametrize(
    ("status", "reason", "truncated", "out", "kind"),
    [
        (200, "stop", False, 10, None),
        (502, None, False, 0, "provider_error"),
        (529, None, False, 0, "provider_error"),
        (200, "length", False, 10, "provider_truncation"),
        (200, "max_tokens", False, 10, "provider_truncation"),
        (200, "stop", True, 10, "provider_truncation"),
        (200, "content_filter", False, 3, "refusal"),
        (200, "refusal", False, 0, "refusal"),
        (499, None, False, 5, "client_disconnect"),
        (200, "end_turn", False, 0, "empty_completion"),
        (429, None, False, 0, "empty_completion"),
        (200, None, False, 0, None),  # an input-only call (embeddings): billed as usual
    ],
)
def test_failure_kinds(status, reason, truncated, out, kind):
    assert (
        failure_kind(
            http_status=status, finish_reason=reason, truncated=truncated, output_tokens=out
        )
        == kind
    )


# -- every provider outcome maps to a failure kind (or is a success) --------------------------


def _literal_values(module: str, attr: str, field: str) -> list[str]:
    import importlib
    import typing

    cls = getattr(importlib.import_module(module), attr)
    ann = cls.model_fields[field].annotation
    out: list[str] = []

    def walk(t):
        if typing.get_origin(t) is typing.Literal:
            out.extend(typing.get_args(t))
        for a in typing.get_args(t):
            walk(a)

    walk(ann)
    return out


SUCCESS = {
    "stop",
    "tool_calls",
    "function_call",
    "end_turn",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "completed",
    "steered",
    "max_messages",
}


@pytest.mark.parametrize(
    ("module", "cls", "field"),
    [
        ("openai.types.chat.chat_completion", "Choice", "finish_reason"),
        ("anthropic.types.message", "Message", "stop_reason"),
    ],
)
def test_every_sdk_finish_reason_is_classified(module, cls, field):
    values = _literal_values(module, cls, field)
    assert values
    for v in values:
        kind = failure_kind(http_status=200, finish_reason=v, truncated=False, output_tokens=1)
        assert kind is not None or v in SUCCESS, v


GEMINI_FINISH = {
    "STOP": None,
    "MAX_TOKENS": "provider_truncation",
    "SAFETY": "refusal",
    "RECITATION": "refusal",
    "LANGUAGE": "refusal",
    "OTHER": "provider_error",
    "BLOCKLIST": "refusal",
    "PROHIBITED_CONTENT": "refusal",
    "SPII": "refusal",
    "MALFORMED_FUNCTION_CALL": "provider_error",
    "IMAGE_SAFETY": "refusal",
    "IMAGE_PROHIBITED_CONTENT": "refusal",
    "IMAGE_RECITATION": "refusal",
    "IMAGE_OTHER": "provider_error",
    "NO_IMAGE": "provider_error",
    "UNEXPECTED_TOOL_CALL": "provider_error",
    "TOO_MANY_TOOL_CALLS": "provider_error",
    "FINISH_REASON_UNSPECIFIED": "provider_error",
    "MISSING_THOUGHT_SIGNATURE": "provider_error",
}


@pytest.mark.parametrize(("reason", "kind"), sorted(GEMINI_FINISH.items()))
def test_every_gemini_finish_reason_is_classified(reason, kind):
    got = failure_kind(http_status=200, finish_reason=reason, truncated=False, output_tokens=1)
    assert got == kind


def test_anthropic_fast_mode_and_litellm_ttls_through_openai_usage():
    from wallet.normalize import parse_usage

    p = parse_usage(
        {},
        {
            "anthropic_usage": {
                "input_tokens": 10,
                "output_tokens": 5,
                "speed": "fast",
                "service_tier": "standard",
            }
        },
    )
    assert p.service_tier == "fast"
    litellm_usage = {
        "prompt_tokens": 10050,
        "completion_tokens": 400,
        "total_tokens": 10450,
        "prompt_tokens_details": {
            "cached_tokens": 8000,
            "cache_creation_tokens": 2000,
            "cache_write_tokens": 2000,
            "cache_creation_token_details": {
                "ephemeral_5m_input_tokens": 500,
                "ephemeral_1h_input_tokens": 1500,
            },
        },
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 8000,
    }
    t = from_openai(litellm_usage)
    assert (t.input_tokens, t.cache_read_tokens) == (50, 8000)
    assert (t.cache_write_5m_tokens, t.cache_write_1h_tokens) == (500, 1500)
    no_split = {
        **litellm_usage,
        "prompt_tokens_details": {"cached_tokens": 8000, "cache_write_tokens": 2000},
    }
    assert from_openai(no_split).cache_write_5m_tokens == 2000  # Anthropic's default TTL


def test_every_responses_incomplete_reason_is_a_truncation_or_a_refusal():
    from wallet.normalize import parse_usage

    usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    for reason in _literal_values("openai.types.responses.response", "IncompleteDetails", "reason"):
        p = parse_usage(
            {},
            {
                "openai_response": {
                    "object": "response",
                    "status": "incomplete",
                    "incomplete_details": {"reason": reason},
                    "usage": usage,
                }
            },
        )
        kind = failure_kind(
            http_status=200, finish_reason=p.finish_reason, truncated=p.truncated, output_tokens=5
        )
        expected = "refusal" if reason == "content_filter" else "provider_truncation"
        assert kind == expected, reason
    for status, kind in (("failed", "provider_error"), ("cancelled", "client_disconnect")):
        p = parse_usage(
            {}, {"openai_response": {"object": "response", "status": status, "usage": usage}}
        )
        assert (
            failure_kind(
                http_status=200,
                finish_reason=p.finish_reason,
                truncated=p.truncated,
                output_tokens=5,
            )
            == kind
        )
