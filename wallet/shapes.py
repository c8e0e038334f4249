"""What every provider-format reader shares (pure).

The errors of a wrong shape, the parsed result, and strict readers of counts and sub-objects. The
readers per format are ``wallet/shapes_openai.py``, ``shapes_anthropic.py``, ``shapes_gemini.py``
and ``shapes_litellm.py``; ``wallet/normalize.py`` is the entry point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plans.errors import InvalidUsage
from plans.prices import SERVICE_TIERS, STANDARD_TIERS
from plans.rating import TOKEN_FIELDS, Tokens


class UsageShapeMismatch(InvalidUsage):
    """A provider object that is not the shape its field names.

    Another format's keys, a whole response where a usage object belongs, or none of the keys the
    format needs.
    """

    code = "usage_shape_mismatch"


class UsageNotFinal(InvalidUsage):
    """A provider object that does not carry the request's final usage yet."""

    code = "usage_not_final"


@dataclass(frozen=True, slots=True)
class Parsed:
    """What a record's usage source says.

    Tokens, and what the provider object says about the outcome (``None``: it says nothing; the
    record's own fields then apply).
    """

    tokens: Tokens
    finish_reason: str | None = None
    truncated: bool = False
    service_tier: str | None = None
    http_status: int | None = None
    source: str = "fields"


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


def _replace_tools(tokens: Tokens, counts: Mapping[str, int]) -> Tokens:
    values = {name: getattr(tokens, name) for name in TOKEN_FIELDS}
    return Tokens(**values, tool_calls=_tools(counts))


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
