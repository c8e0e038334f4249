"""LiteLLM end to end against a real ``tokenwallet serve`` on real PostgreSQL.

The real ``litellm`` package (its bundled price map, mock responses, no network) with
:class:`integrations.litellm_logger.TokenwalletLogger` reporting through the gateway client and
refusing calls the wallet cannot pay, and LiteLLM's own ``GenericAPILogger`` pointed at the
receiver. Expected charges are computed here from the card's per-Mtok prices.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from integrations import TokenwalletClient

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import litellm
from litellm.integrations.generic_api.generic_api_callback import GenericAPILogger

from integrations.litellm_logger import TokenwalletLogger
from tests.helpers import account_id, ok

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MODEL = "gpt-4o"  # in LiteLLM's map; priced here at 2.50 in / 10.00 out / 1.25 cached
M = Decimal(1_000_000)


@pytest.fixture
def admin(server, keys) -> Iterator[httpx.Client]:
    with server.client(keys["admin"]) as c:
        ok(c.post("/v1/models", json={"id": MODEL, "provider": "openai", "display_name": MODEL}))
        ok(
            c.post(
                "/v1/rate-cards",
                json={
                    "currency": "USD",
                    "effective_from": T0.isoformat(),
                    "prices": [
                        {
                            "model": MODEL,
                            "input_per_mtok": "2.50",
                            "output_per_mtok": "10.00",
                            "cache_read_per_mtok": "1.25",
                        }
                    ],
                },
            )
        )
        yield c


def usage_rows(admin: httpx.Client, acc: str) -> list[dict[str, Any]]:
    return list(ok(admin.get(f"/v1/accounts/{acc}/usage"), 200)["data"])


@pytest.fixture
def client(server, keys) -> Iterator[TokenwalletClient]:
    c = TokenwalletClient(
        server.url, keys["gateway"], max_batch=50, flush_interval_s=0.05, retry_max_s=20
    )
    try:
        yield c
    finally:
        c.close(30)


@pytest.fixture
def callbacks() -> Iterator[list[Any]]:
    """LiteLLM's callback list, emptied before and after.

    LiteLLM copies callbacks into internal lists too: all of them are reset.
    """
    litellm.logging_callback_manager._reset_all_callbacks()
    yield litellm.callbacks
    litellm.logging_callback_manager._reset_all_callbacks()


def mock(content: str, prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    """A mock response with the usage a provider would report (LiteLLM returns it as is)."""
    return {
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def test_completion_usage_is_reported_exactly_once_through_the_client(
    admin, client, callbacks, engine
):
    acc = account_id(admin, "10.00")
    logger = TokenwalletLogger(client, authorize=False)
    callbacks.append(logger)
    for i in range(3):
        resp = litellm.completion(
            model=MODEL,
            messages=[{"role": "user", "content": f"hello {i}"}],
            mock_response=mock("Hi there!", 2000, 300, cached=1500),
            metadata={"tokenwallet_account_id": acc},
        )
        assert resp.choices[0].message.content == "Hi there!"
    # LiteLLM's sync path logs successes on a background thread: wait until they reached the
    # client, then until the client delivered them
    deadline = time.monotonic() + 30
    while client.stats().reported < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    client.flush(30)
    # 500 uncached + 1500 cached in, 300 out, three times; computed from the card's prices
    per_call = (500 * Decimal("2.50") + 1500 * Decimal("1.25") + 300 * Decimal("10.00")) / M
    rows = usage_rows(admin, acc)
    assert rows[0]["records"] == 3
    assert Decimal(rows[0]["billed"]["amount"]) == 3 * per_call
    assert client.stats().charged == 3


def test_pre_call_hook_draws_on_a_grant_and_refuses_at_the_hard_stop(admin, client, callbacks):
    acc = account_id(admin, "0.05")
    logger = TokenwalletLogger(client, grant_amount="0.02")
    callbacks.append(logger)

    async def calls() -> tuple[int, int]:
        charged, refused = 0, 0
        for _ in range(12):
            try:
                await litellm.acompletion(
                    model=MODEL,
                    messages=[{"role": "user", "content": "x" * 30}],
                    mock_response=mock("ok", 11, 1000),
                    max_tokens=1000,
                    metadata={"tokenwallet_account_id": acc},
                )
                charged += 1
            except Exception as exc:  # LiteLLM may wrap what a hook raises
                assert "tokenwallet refused" in str(exc), exc
                refused += 1
        for _ in range(100):  # LiteLLM logs successes in the background, on this loop
            if client.stats().reported >= charged:
                break
            await asyncio.sleep(0.05)
        return charged, refused

    charged, refused = asyncio.run(calls())
    logger.close()
    client.flush(30)
    # each call reserves (30 chars / 3 + 1 + 1000) tokens; it costs 11 in + 1000 out:
    # 0.0100275; 0.05 pays for 4 such calls and no more
    cost = (11 * Decimal("2.50") + 1000 * Decimal("10.00")) / M
    rows = usage_rows(admin, acc)
    assert charged == rows[0]["records"] and refused == 12 - charged
    assert Decimal(rows[0]["billed"]["amount"]) == charged * cost
    assert charged == int(Decimal("0.05") / cost) or charged == int(Decimal("0.05") / cost) - 1
    balance = ok(admin.get(f"/v1/accounts/{acc}/balance"), 200)
    assert Decimal(balance["paid"]) == Decimal("0.05") - charged * cost >= 0


def test_a_call_without_an_account_is_refused(admin, client, callbacks):
    callbacks.append(TokenwalletLogger(client))
    with pytest.raises(Exception, match="names no account"):
        asyncio.run(
            litellm.acompletion(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], mock_response="ok"
            )
        )


def test_generic_api_logger_posts_to_the_receiver_as_it_is(server, keys, admin, callbacks):
    acc = account_id(admin, "10.00")

    async def run() -> None:
        generic = GenericAPILogger(  # it starts its flush task: construct it on the loop
            endpoint=f"{server.url}/v1/integrations/litellm",
            headers={"Authorization": f"Bearer {keys['gateway']}"},
        )
        callbacks.append(generic)
        for _ in range(2):
            await litellm.acompletion(
                model=MODEL,
                messages=[{"role": "user", "content": "hi"}],
                mock_response=mock("Hello", 1000, 100),
                # LiteLLM keeps spend_logs_metadata in the payload it logs
                metadata={"spend_logs_metadata": {"tokenwallet_account_id": acc}},
            )
        for _ in range(100):  # LiteLLM logs successes in the background, on this loop
            if len(generic.log_queue) >= 2:
                break
            await asyncio.sleep(0.05)
        await generic.flush_queue()

    asyncio.run(run())
    rows = usage_rows(admin, acc)
    cost = (1000 * Decimal("2.50") + 100 * Decimal("10.00")) / M
    assert rows[0]["records"] == 2 and Decimal(rows[0]["billed"]["amount"]) == 2 * cost


def test_receiver_formats_ids_and_accounts(server, keys, admin):
    acc = account_id(admin, "10.00")
    slp = {
        "id": "chatcmpl-1",
        "litellm_call_id": "call-abc",
        "call_type": "acompletion",
        "status": "success",
        "model": MODEL,
        "startTime": datetime.now(UTC).timestamp(),
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "total_tokens": 110,
        "response_cost": 0.00035,
        "metadata": {"user_api_key_auth_metadata": {"tokenwallet_account_id": acc}},
    }
    with server.client(keys["gateway"]) as c:
        import json

        first = ok(c.post("/v1/integrations/litellm", content=json.dumps([slp])), 200)
        again = ok(c.post("/v1/integrations/litellm", content=json.dumps(slp)), 200)
        nd = ok(
            c.post(
                "/v1/integrations/litellm",
                content=json.dumps({**slp, "litellm_call_id": "call-2"})
                + "\n"
                + json.dumps({**slp, "litellm_call_id": "call-3", "metadata": {}}),
            ),
            200,
        )
        bad = c.post("/v1/integrations/litellm", content=b"not json")
    assert first["results"][0]["id"] == "call-abc" and first["results"][0]["status"] == "charged"
    assert again["results"][0]["status"] == "duplicate"
    assert [r["status"] for r in nd["results"]] == ["charged", "rejected"]
    assert "tokenwallet_account_id" in nd["results"][1]["detail"]
    assert bad.status_code == 400 and bad.json()["code"] == "validation_error"
