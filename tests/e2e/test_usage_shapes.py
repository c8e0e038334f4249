"""Every usage shape and price dimension over HTTP on real PostgreSQL, from the providers' SDKs.

The records are the providers' own SDK objects (openai, anthropic, litellm pydantic types built
from realistic JSON); the expected charges are computed here, independently, from the per-Mtok
prices (Decimal arithmetic).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

import anthropic.types as at
import openai.types.chat as oc
import openai.types.responses as orr
import pytest

from ledger.base import utcnow
from tests.helpers import add_models, add_rate_card, key_headers, ok
from wallet.normalize import PROVIDER_FIELDS

T0 = datetime(2026, 1, 1, tzinfo=UTC)
M = Decimal(1_000_000)

GPT = {
    "model": "gpt-x",
    "input_per_mtok": "2.50",
    "output_per_mtok": "10.00",
    "cache_read_per_mtok": "0.25",
    "cache_write_30m_per_mtok": "3.00",
    "cache_write_12h_per_mtok": "5.00",
    "input_audio_per_mtok": "40.00",
    "output_audio_per_mtok": "80.00",
    "request_fees": {"web_search": "0.01", "file_search": "0.0025"},
    "service_tiers": {
        "flex": {"multiplier": "0.5"},
        "priority": {"input_per_mtok": "4.25", "output_per_mtok": "17.00"},
    },
    "context_tiers": [
        {
            "above_input_tokens": 272000,
            "input_per_mtok": "5.00",
            "output_per_mtok": "15.00",
            "cache_read_per_mtok": "0.50",
        }
    ],
}
CLAUDE = {
    "model": "claude-x",
    "input_per_mtok": "3.00",
    "output_per_mtok": "15.00",
    "request_fees": {"web_search": "0.01"},
    "context_tiers": [
        {"above_input_tokens": 200000, "input_per_mtok": "6.00", "output_per_mtok": "22.50"}
    ],
}
GEMINI = {
    "model": "gemini-x",
    "input_per_mtok": "1.25",
    "output_per_mtok": "10.00",
    "cache_read_per_mtok": "0.125",
    "input_audio_per_mtok": "3.00",
    "context_tiers": [
        {
            "above_input_tokens": 200000,
            "input_per_mtok": "2.50",
            "output_per_mtok": "15.00",
            "cache_read_per_mtok": "0.25",
        }
    ],
}


def cost(*pairs: tuple[int, str]) -> Decimal:
    """Sum of tokens x per-Mtok price, exactly (the test's own arithmetic)."""
    with localcontext() as ctx:
        ctx.prec = 60
        return sum((Decimal(n) * Decimal(p) / M for n, p in pairs), Decimal(0))


@pytest.fixture
def gw(admin, engine):
    add_models(admin, "gpt-x", "claude-x", "gemini-x", provider="p")
    add_rate_card(admin, [GPT, CLAUDE, GEMINI], T0)
    ok(
        admin.post(
            "/v1/failed-request-policies",
            json={
                "id": "lenient",
                "rules": {"provider_truncation": "not_billed", "refusal": "not_billed"},
            },
        )
    )
    return key_headers(engine, "gateway")


def account(admin, **kw):
    acc = ok(admin.post("/v1/accounts", json={"name": "C", "currency": "USD", **kw}))
    ok(
        admin.post(
            f"/v1/accounts/{acc['id']}/topups", json={"amount": "500.00", "method": "bank_transfer"}
        )
    )
    return acc


def send(client, headers, *records):
    return ok(client.post("/v1/usage", json={"records": list(records)}, headers=headers), 200)[
        "results"
    ]


def record(rid: str, acc: dict[str, Any], model: str, **kw: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "account_id": acc["id"],
        "model": model,
        "occurred_at": utcnow().isoformat(),
        **kw,
    }


def charged(result: dict[str, Any], expected: Decimal) -> dict[str, Any]:
    assert result["status"] == "charged", result
    assert Decimal(result["charge"]["rated"]) == expected, result["charge"]
    assert Decimal(result["billed"]["amount"]) + Decimal(result["credited"]["amount"]) == expected
    parts = sum(Decimal(v) for v in result["charge"]["components"].values())
    assert parts == expected  # the components add up to the rated amount
    return result


# -- OpenAI ---------------------------------------------------------------------------------

CHAT_JSON = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-x-2026-08-07",
    "service_tier": "flex",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 12000,
        "completion_tokens": 900,
        "total_tokens": 12900,
        "prompt_tokens_details": {"cached_tokens": 8000, "audio_tokens": 1000},
        "completion_tokens_details": {
            "reasoning_tokens": 300,
            "audio_tokens": 100,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
}


def test_openai_chat_completion_whole_and_usage_alone(admin, gw):
    acc = account(admin)
    completion = oc.ChatCompletion.model_validate(CHAT_JSON)
    whole, alone = send(
        admin,
        gw,
        record("whole", acc, "gpt-x", openai_response=completion.model_dump(mode="json")),
        record("alone", acc, "gpt-x", openai_usage=completion.usage.model_dump(mode="json")),
    )
    # uncached 4000 = 3000 text + 1000 audio; output 900 = 500 text + 300 reasoning + 100 audio
    standard = cost(
        (3000, "2.50"), (1000, "40.00"), (8000, "0.25"), (500, "10.00"), (300, "10.00"),
        (100, "80.00"),
    )  # fmt: skip
    charged(whole, standard / 2)  # flex: half the standard prices, from the response object
    assert whole["charge"]["service_tier"] == "flex"
    assert whole["tokens"] == {
        "input_tokens": 3000,
        "input_audio_tokens": 1000,
        "cache_read_tokens": 8000,
        "output_tokens": 900,
        "reasoning_tokens": 300,
        "output_audio_tokens": 100,
    }
    charged(alone, standard)  # a usage object alone says nothing of the tier: standard
    assert alone["charge"]["components"]["input_audio"] == "0.04"


def test_openai_wrong_shapes_are_refused_never_charged_zero(admin, gw):
    acc = account(admin)
    completion = oc.ChatCompletion.model_validate(CHAT_JSON).model_dump(mode="json")
    claude_usage = at.Usage.model_validate(
        {"input_tokens": 50, "output_tokens": 400, "cache_read_input_tokens": 8000}
    ).model_dump(mode="json")
    gemini_meta = {"promptTokenCount": 100, "candidatesTokenCount": 5, "totalTokenCount": 105}
    results = send(
        admin,
        gw,
        record("r1", acc, "gpt-x", openai_usage=completion),
        record("r2", acc, "gpt-x", openai_usage=claude_usage),
        record("r3", acc, "gpt-x", openai_usage=gemini_meta),
        record("r4", acc, "gpt-x", openai_usage={"foo": 1}),
        record("r5", acc, "gpt-x", anthropic_usage=completion["usage"]),
        record("r6", acc, "gpt-x", openai_response=completion["usage"]),
        record("r7", acc, "gpt-x", openai_usage=completion["usage"], input_tokens=5),
        record("r8", acc, "gpt-x", openai_response={**completion, "usage": None}),
    )
    assert [r["reason"] for r in results] == [
        "usage_shape_mismatch",
        "usage_shape_mismatch",
        "usage_shape_mismatch",
        "usage_shape_mismatch",
        "usage_shape_mismatch",
        "usage_shape_mismatch",
        "invalid_usage",
        "usage_not_final",
    ]
    assert all(r["status"] == "rejected" for r in results)
    assert "openai_response" in results[0]["detail"]
    assert "anthropic_usage" in results[1]["detail"]
    assert "gemini_usage" in results[2]["detail"]
    balance = ok(admin.get(f"/v1/accounts/{acc['id']}/balance"), 200)
    assert balance["paid"] == "500.00"  # nothing was charged
    # rejected ids stay unclaimed: the corrected record is charged
    (fixed,) = send(admin, gw, record("r1", acc, "gpt-x", openai_response=completion))
    assert fixed["status"] == "charged"


RESPONSE_JSON = {
    "id": "resp_67ccd2bed1ec8190b14f964abc054267",
    "object": "response",
    "created_at": 1741476542,
    "status": "incomplete",
    "incomplete_details": {"reason": "max_output_tokens"},
    "error": None,
    "instructions": None,
    "model": "gpt-x",
    "output": [
        {
            "type": "web_search_call",
            "id": "ws_1",
            "status": "completed",
            "action": {"type": "search", "query": "weather"},
        },
        {
            "type": "web_search_call",
            "id": "ws_2",
            "status": "completed",
            "action": {"type": "search", "query": "news"},
        },
    ],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "service_tier": "default",
    "usage": {
        "input_tokens": 300000,
        "input_tokens_details": {
            "cached_tokens": 200000,
            "cache_write_tokens": 60000,
            "cache_write_tokens_details": {"ttl_30m_tokens": 40000, "ttl_12h_tokens": 20000},
        },
        "output_tokens": 2000,
        "output_tokens_details": {"reasoning_tokens": 1500},
        "total_tokens": 302000,
    },
}


def test_openai_responses_incomplete_ttls_context_tier_and_web_search(admin, gw):
    strict = account(admin, failed_request_policy="lenient")
    default = account(admin)
    response = orr.Response.model_validate(RESPONSE_JSON).model_dump(mode="json")
    (a,) = send(admin, gw, record("resp-a", strict, "gpt-x", openai_response=response))
    (b,) = send(admin, gw, record("resp-b", default, "gpt-x", openai_response=response))
    # a 300k prompt is above 272k: the whole request at the context tier's prices; cache
    # writes were not given there, so they default from its input (30 m = 5 m = 1.25x, 12 h =
    # 1 h = 2x); the two web searches at 0.01 each
    expected = cost(
        (40000, "5.00"),  # uncached: 300000 - 200000 - 60000
        (200000, "0.50"),
        (40000, "6.25"),
        (20000, "10.00"),
        (500, "15.00"),
        (1500, "15.00"),
    ) + Decimal("0.02")
    charged(a, expected)
    charged(b, expected)
    assert a["charge"]["context_tier"] == 272000
    assert a["charge"]["components"]["web_search"] == "0.02"
    assert a["tokens"]["cache_write_30m_tokens"] == 40000
    assert a["tokens"]["cache_write_12h_tokens"] == 20000
    assert a["tokens"]["tool_calls"] == {"web_search": 2}
    # status incomplete (max_output_tokens) is a truncation: the lenient policy bills nothing
    assert a["reason"] == "provider_truncation:not_billed"
    assert Decimal(a["billed"]["amount"]) == 0
    assert b["reason"] == "provider_truncation:billed"
    assert Decimal(b["billed"]["amount"]) == expected


def test_openai_priority_tier_price_and_unpriced_tier_refused(admin, gw):
    acc = account(admin)
    prio = copy.deepcopy(CHAT_JSON)
    prio["service_tier"] = "priority"
    scale = copy.deepcopy(CHAT_JSON)
    scale["service_tier"] = "scale"
    p, s = send(
        admin,
        gw,
        record("prio", acc, "gpt-x", openai_response=oc.ChatCompletion.model_validate(prio)
               .model_dump(mode="json")),
        record("scale", acc, "gpt-x", openai_response=scale),
    )  # fmt: skip
    # the priority tier has its own prices: audio and reasoning default from them
    charged(
        p,
        cost((3000, "4.25"), (1000, "4.25"), (8000, "0.425"), (500, "17.00"), (300, "17.00"),
             (100, "17.00")),
    )  # fmt: skip
    assert s["status"] == "rejected" and s["reason"] == "unpriced_service_tier"
    assert "service_tiers.scale" in s["detail"]


def test_context_tier_boundary_is_strictly_above(admin, gw):
    acc = account(admin)
    at_limit, above = send(
        admin,
        gw,
        record("c1", acc, "claude-x", input_tokens=200000, output_tokens=1000),
        record("c2", acc, "claude-x", input_tokens=200001, output_tokens=1000),
    )
    charged(at_limit, cost((200000, "3.00"), (1000, "15.00")))
    charged(above, cost((200001, "6.00"), (1000, "22.50")))


# -- Anthropic ------------------------------------------------------------------------------

MESSAGE_JSON = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [{"type": "text", "text": "Hi!", "citations": None}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 50,
        "output_tokens": 400,
        "cache_read_input_tokens": 8000,
        "cache_creation_input_tokens": 2000,
        "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1500},
        "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 0},
        "service_tier": "batch",
    },
}


def test_anthropic_message_batch_tier_ttls_and_web_search(admin, gw):
    acc = account(admin)
    message = at.Message.model_validate(MESSAGE_JSON)
    whole, alone = send(
        admin,
        gw,
        record("m1", acc, "claude-x", anthropic_message=message.model_dump(mode="json")),
        record("m2", acc, "claude-x", anthropic_usage=message.usage.model_dump(mode="json")),
    )
    tokens = cost(
        (50, "3.00"), (8000, "0.30"), (500, "3.75"), (1500, "6.00"), (400, "15.00")
    )  # defaults: cache read 0.1x, 5 m write 1.25x, 1 h write 2x input
    # usage.service_tier batch: half the tokens; the 3 web searches are not discounted
    expected = tokens / 2 + Decimal("0.03")
    for r in (whole, alone):
        charged(r, expected)
        assert r["charge"]["service_tier"] == "batch"
        assert Decimal(r["charge"]["components"]["batch_discount"]) == -tokens / 2
        assert r["tokens"]["tool_calls"] == {"web_search": 3}
        assert r["tokens"]["cache_write_1h_tokens"] == 1500


def test_anthropic_refusal_and_truncation_from_stop_reason(admin, gw):
    acc = account(admin, failed_request_policy="lenient")
    refused = {
        **MESSAGE_JSON,
        "stop_reason": "refusal",
        "usage": {"input_tokens": 10, "output_tokens": 2},
    }
    cut = {
        **MESSAGE_JSON,
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 10, "output_tokens": 2},
    }
    a, b = send(
        admin,
        gw,
        record("ref", acc, "claude-x", anthropic_message=at.Message.model_validate(refused)
               .model_dump(mode="json")),
        record("cut", acc, "claude-x", anthropic_message=cut),
    )  # fmt: skip
    assert a["reason"] == "refusal:not_billed"
    assert b["reason"] == "provider_truncation:not_billed"


# -- Gemini ---------------------------------------------------------------------------------

GEMINI_JSON = {
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": ""}]},
            "finishReason": "SAFETY",
            "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
            ],
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 250000,
        "cachedContentTokenCount": 150000,
        "candidatesTokenCount": 0,
        "thoughtsTokenCount": 180,
        "toolUsePromptTokenCount": 40,
        "totalTokenCount": 250220,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 249000},
            {"modality": "AUDIO", "tokenCount": 1000},
        ],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 150000}],
    },
    "modelVersion": "gemini-x-001",
    "responseId": "abc",
}


def test_gemini_response_safety_is_a_refusal_and_context_tier_applies(admin, gw):
    lenient = account(admin, failed_request_policy="lenient")
    default = account(admin)
    a, b, c = send(
        admin,
        gw,
        record("g1", lenient, "gemini-x", gemini_response=GEMINI_JSON),
        record("g2", default, "gemini-x", gemini_response=GEMINI_JSON),
        record("g3", default, "gemini-x", gemini_usage=GEMINI_JSON["usageMetadata"]),
    )
    # prompt 250k > 200k: the context tier; uncached = 250000 - 150000 + 40 tool-use prompt
    # tokens, of which 1000 audio (audio is not priced in the tier: its input price);
    # thoughts are output (reasoning) billed at the output price
    expected = cost((99040, "2.50"), (1000, "2.50"), (150000, "0.25"), (180, "15.00"))
    charged(a, expected)
    assert a["reason"] == "refusal:not_billed"  # SAFETY is a refusal, not an empty completion
    charged(b, expected)
    assert b["reason"] == "refusal:billed"  # the default policy bills refusals
    charged(c, expected)
    assert c["reason"] is None  # usage alone says nothing of the outcome
    assert a["tokens"]["reasoning_tokens"] == 180


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("SAFETY", "refusal"),
        ("RECITATION", "refusal"),
        ("PROHIBITED_CONTENT", "refusal"),
        ("BLOCKLIST", "refusal"),
        ("SPII", "refusal"),
        ("MALFORMED_FUNCTION_CALL", "provider_error"),
        ("MAX_TOKENS", "provider_truncation"),
    ],
)
def test_gemini_finish_reasons(admin, gw, reason, kind):
    acc = account(admin)
    body = copy.deepcopy(GEMINI_JSON)
    body["candidates"][0]["finishReason"] = reason
    body["usageMetadata"] = {"promptTokenCount": 100, "candidatesTokenCount": 10}
    (r,) = send(admin, gw, record(f"g-{reason}", acc, "gemini-x", gemini_response=body))
    assert r["reason"].split(":")[0] == kind


def test_gemini_blocked_prompt_and_snake_case(admin, gw):
    acc = account(admin)
    blocked = {
        "promptFeedback": {"blockReason": "OTHER"},
        "usageMetadata": {"promptTokenCount": 100, "totalTokenCount": 100},
    }
    snake = {"prompt_token_count": 100, "candidates_token_count": 10, "total_token_count": 110}
    a, b = send(
        admin,
        gw,
        record("gb", acc, "gemini-x", gemini_response=blocked),
        record("gs", acc, "gemini-x", gemini_usage=snake),
    )
    assert a["reason"] == "refusal:billed"
    charged(b, cost((100, "1.25"), (10, "10.00")))


# -- canonical fields ----------------------------------------------------------------------


def test_canonical_fields_tiers_and_fees(admin, gw):
    acc = account(admin)
    a, b, c = send(
        admin,
        gw,
        record(
            "k1",
            acc,
            "gpt-x",
            input_tokens=1000,
            output_tokens=100,
            service_tier="flex",
            tool_calls={"web_search": 1, "file_search": 4},
        ),
        record("k2", acc, "gpt-x", input_tokens=1, tool_calls={"telepathy": 1}),
        record("k3", acc, "gpt-x", input_tokens=1, service_tier="turbo"),
    )
    charged(a, cost((1000, "2.50"), (100, "10.00")) / 2 + Decimal("0.01") + Decimal("0.01"))
    assert b["status"] == "rejected" and b["reason"] == "invalid_usage"
    assert c["status"] == "rejected" and c["reason"] == "invalid_usage"


def test_duplicates_answer_the_first_result(admin, gw):
    acc = account(admin)
    body = record("d1", acc, "claude-x", anthropic_message=MESSAGE_JSON)
    (first,) = send(admin, gw, body)
    (again,) = send(admin, gw, body)
    assert again["status"] == "duplicate"
    assert again["billed"] == first["billed"]


def test_usage_too_early_for_the_card_is_refused(admin, gw):
    acc = account(admin)
    (r,) = send(
        admin,
        gw,
        {**record("old", acc, "gpt-x", input_tokens=1), "occurred_at": (utcnow() - timedelta(
            days=400)).isoformat()},
    )  # fmt: skip
    assert r["status"] == "rejected"


# -- the OpenAPI document --------------------------------------------------------------------


def test_openapi_describes_the_record_the_result_and_the_price_dimensions(client):
    doc = client.get("/schema/openapi.json").json()
    schemas = doc["components"]["schemas"]
    body = doc["paths"]["/v1/usage"]["post"]["requestBody"]["content"]["application/json"]
    batch = schemas[body["schema"]["$ref"].rsplit("/", 1)[1]]
    items = batch["properties"]["records"]["items"]
    for name in (
        *PROVIDER_FIELDS,
        "service_tier",
        "tool_calls",
        "cache_write_30m_tokens",
        "input_audio_tokens",
    ):
        assert name in items["properties"], name
    formats = {
        k
        for ex in items["examples"]
        for k in ex
        if k.endswith(("_response", "_message", "_payload"))
    }
    assert formats == {"openai_response", "anthropic_message", "gemini_response", "litellm_payload"}
    result = schemas["UsageResultOut"]["properties"]
    assert {"tokens", "charge"} <= set(result)
    assert "components" in schemas["ChargeOut"]["properties"]
    price = schemas["ModelPriceIn"]["properties"]
    for name in (
        "service_tiers",
        "context_tiers",
        "request_fees",
        "cache_write_12h_per_mtok",
        "output_image_per_mtok",
    ):
        assert name in price, name
    assert {"service_tiers", "context_tiers", "request_fees"} <= set(
        schemas["ModelPriceOut"]["properties"]
    )
