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
    assert (t.input_tokens, t.cache_read_tokens, t.cache_write_5m_tokens) == (500, 3000, 1500)


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
