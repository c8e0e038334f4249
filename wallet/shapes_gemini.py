"""Gemini ``usageMetadata`` and whole ``GenerateContentResponse`` objects, pure.

camelCase (REST) or snake_case (google-genai). ``promptTokenCount`` INCLUDES cached tokens;
thoughts and tool-use prompt tokens are counted apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from plans.errors import InvalidUsage
from plans.rating import Tokens
from wallet.outcomes import REFUSAL_REASONS, _worst
from wallet.shapes import (
    Parsed,
    UsageNotFinal,
    UsageShapeMismatch,
    _check,
    _count,
    _foreign,
    _mapping,
)

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
