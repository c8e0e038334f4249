"""Usage records in (the gateway hot path).

Each record of a batch is checked and parsed alone with msgspec, so one bad record is rejected
alone; the canonical fields skip the generic provider-object parser.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from api.boundary import check_record, is_clean_line, json_text_clean
from api.usage_schema import RECORD_SCHEMA
from ledger.errors import DomainError
from plans.errors import InvalidUsage
from plans.prices import SERVICE_TIERS, STANDARD_TIERS
from plans.rating import TOKEN_FIELDS, Tokens
from wallet.charging import MAX_BATCH
from wallet.normalize import PROVIDER_FIELDS, Parsed, canonical_tokens, parse_usage
from wallet.records import Rejected, UsageIn

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


_AccountId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


_Count = Annotated[int, msgspec.Meta(ge=0, le=10**12)]


_Object = dict[str, Any] | None


class _Record(msgspec.Struct, forbid_unknown_fields=True):
    """:class:`UsageRecordIn` as the hot path checks it.

    Msgspec: a few microseconds a record, strict types, same limits.
    """

    id: _Id
    account_id: _AccountId
    model: _Id
    occurred_at: Annotated[datetime, msgspec.Meta(tz=True)]
    input_tokens: _Count | None = None
    output_tokens: _Count | None = None
    cache_read_tokens: _Count | None = None
    cache_write_5m_tokens: _Count | None = None
    cache_write_1h_tokens: _Count | None = None
    reasoning_tokens: _Count | None = None
    cache_write_30m_tokens: _Count | None = None
    cache_write_12h_tokens: _Count | None = None
    input_audio_tokens: _Count | None = None
    input_image_tokens: _Count | None = None
    output_audio_tokens: _Count | None = None
    output_image_tokens: _Count | None = None
    tool_calls: Annotated[dict[str, _Count], msgspec.Meta(max_length=10)] | None = None
    batch: bool = False
    service_tier: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    upstream: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    http_status: Annotated[int, msgspec.Meta(ge=100, le=599)] = 200
    finish_reason: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    truncated: bool = False
    authorization_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    tags: Annotated[dict[str, str], msgspec.Meta(max_length=50)] = {}
    openai_usage: _Object = None
    openai_response: _Object = None
    anthropic_usage: _Object = None
    anthropic_message: _Object = None
    gemini_usage: _Object = None
    gemini_response: _Object = None
    litellm_payload: _Object = None


def _problem_of(exc: msgspec.ValidationError) -> str:
    """``field: message`` from msgspec's ``message - at `$.field` ``."""
    message, _, where = str(exc).rpartition(" - at `$.")
    if not message:
        return str(exc)
    return f"{where.rstrip('`')}: {message}"


class UsageBatchIn(BaseModel):
    """Up to 1,000 records; each is validated on its own, so one bad record fails alone."""

    model_config = ConfigDict(extra="forbid")
    records: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_BATCH, json_schema_extra={"items": RECORD_SCHEMA}
    )


_Outcome = tuple[Tokens, str | None, bool, str | None, bool, int]


def _read(rec: _Record) -> _Outcome:
    """Tokens, service tier, batch flag, finish reason, truncation and HTTP status of a record.

    Canonical fields take the fast path; a provider object goes through the strict parser.
    """
    if (
        rec.openai_usage is None
        and rec.openai_response is None
        and rec.anthropic_usage is None
        and rec.anthropic_message is None
        and rec.gemini_usage is None
        and rec.gemini_response is None
        and rec.litellm_payload is None
    ):
        tokens = canonical_tokens(
            rec.input_tokens or 0,
            rec.output_tokens or 0,
            rec.cache_read_tokens or 0,
            rec.cache_write_5m_tokens or 0,
            rec.cache_write_1h_tokens or 0,
            rec.reasoning_tokens or 0,
            rec.cache_write_30m_tokens or 0,
            rec.cache_write_12h_tokens or 0,
            rec.input_audio_tokens or 0,
            rec.input_image_tokens or 0,
            rec.output_audio_tokens or 0,
            rec.output_image_tokens or 0,
            rec.tool_calls,
        )
        if rec.service_tier is None:
            return tokens, None, rec.batch, rec.finish_reason, rec.truncated, rec.http_status
        return tokens, *_outcome(rec, Parsed(tokens))
    provider = {k: v for k in PROVIDER_FIELDS if (v := getattr(rec, k)) is not None}
    parsed = parse_usage(
        {k: getattr(rec, k) for k in TOKEN_FIELDS}, provider, tool_calls=rec.tool_calls
    )
    return parsed.tokens, *_outcome(rec, parsed)


def parse_record(index: int, raw: dict[str, Any], text_clean: bool = False) -> UsageIn | Rejected:
    """Record ``index`` of a batch, or why it is rejected (alone: the others go on).

    ``text_clean``: the body was scanned and holds no control character.
    """
    rid = raw.get("id") if is_clean_line(raw.get("id")) else f"#{index}"
    try:
        check_record(raw, index, text_clean=text_clean)
        rec = msgspec.convert(raw, _Record)
        tokens, tier, batch, finish, truncated, status = _read(rec)
    except msgspec.ValidationError as exc:
        return Rejected(str(rid), "validation_error", _problem_of(exc))
    except DomainError as exc:
        return Rejected(str(rid), exc.code, exc.detail)
    return UsageIn(
        id=rec.id,
        account_id=rec.account_id,
        model=rec.model,
        occurred_at=rec.occurred_at,
        tokens=tokens,
        batch=batch,
        http_status=status,
        finish_reason=finish,
        truncated=truncated,
        authorization_id=rec.authorization_id,
        tags=rec.tags,
        service_tier=tier,
        upstream=rec.upstream,
    )


def _outcome(rec: _Record, parsed: Parsed) -> tuple[str | None, bool, str | None, bool, int]:
    """Service tier, batch, finish reason, truncation and HTTP status of a record.

    Its own fields, or what its provider object says (the two must agree).

    Raises:
        InvalidUsage: the record's fields contradict its provider object.
    """
    tier = parsed.service_tier
    if rec.service_tier is not None:
        own = rec.service_tier.lower()
        own = "standard" if own in STANDARD_TIERS else own
        if own != "standard" and own not in SERVICE_TIERS:
            raise InvalidUsage(
                f"service_tier {rec.service_tier!r} is not a known service tier"
                f" (standard, {', '.join(SERVICE_TIERS)})"
            )
        if tier is not None and tier != own:
            raise InvalidUsage(
                f"service_tier {rec.service_tier!r} contradicts the provider object's {tier!r}"
            )
        tier = own
    batch = rec.batch or tier == "batch"
    if batch and tier not in (None, "standard", "batch"):
        raise InvalidUsage(f"batch: true contradicts service_tier {tier!r}")
    tier = None if tier in (None, "standard", "batch") else tier
    finish, truncated = rec.finish_reason, rec.truncated
    if parsed.finish_reason is not None or parsed.truncated:
        if finish is not None and finish != parsed.finish_reason:
            raise InvalidUsage(
                f"finish_reason {finish!r} contradicts the provider object's"
                f" {parsed.finish_reason!r}; it is read from the object, leave it out"
            )
        finish, truncated = parsed.finish_reason, truncated or parsed.truncated
    status = rec.http_status
    if parsed.http_status is not None and status == 200:
        status = parsed.http_status
    return tier, batch, finish, truncated, status


def parse_records(
    records: Sequence[dict[str, Any]], body: bytes | None = None
) -> tuple[UsageIn | Rejected, ...]:
    """Every record of a batch, each checked and parsed alone.

    ``body``: the request's JSON text, scanned once for control characters (without it every
    string is checked).
    """
    clean = body is not None and json_text_clean(body)
    return tuple(parse_record(i, raw, clean) for i, raw in enumerate(records))
