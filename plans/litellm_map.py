"""LiteLLM's price map (``model_prices_and_context_window.json``) as rate-card prices (pure).

LiteLLM quotes USD per token as JSON floats. :func:`convert` turns each model into a
``prices`` item of a rate card (per-Mtok decimal strings, service tiers, context tiers, fees)
or refuses it with a reason; what it maps is listed in ``docs/pricing.md``.

**Rounding rule** (:data:`ROUNDING_RULE`): a float is read as the shortest decimal that
round-trips to it (Python's ``repr``: ``3e-06`` is 0.000003, not its binary expansion), times
1,000,000. A per-Mtok price with more than 6 decimals (the catalog's limit for given prices)
is rounded half-even to 6 decimals and the model is flagged ``rounded`` (refused when
``strict``); a price that rounding would move by more than 0.01 % (or to zero) cannot be
represented and the model is refused. Fees (USD per request) follow the same rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from ledger.errors import DomainError
from plans._db import ID_RE
from plans.price_fields import GIVEN_PRICE_PLACES
from plans.prices import price_from_item

ROUNDING_RULE = (
    "each per-token float is read as the shortest decimal that round-trips to it, times"
    " 1,000,000; more than 6 decimals per Mtok are rounded half-even to 6 and the model is"
    " flagged 'rounded' (refused with strict); a price rounding would move by more than 0.01 %"
    " (or to zero) is refused"
)

#: Modes whose models are priced per token.
TOKEN_MODES = frozenset({"chat", "completion", "responses", "embedding", "realtime"})

#: LiteLLM per-token keys (without tier or context suffixes) and the price field each sets;
#: ``cache_creation_input_token_cost`` is the provider's default write lifetime (below).
_TOKEN_KEYS = {
    "input_cost_per_token": "input_per_mtok",
    "output_cost_per_token": "output_per_mtok",
    "cache_read_input_token_cost": "cache_read_per_mtok",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h_per_mtok",
    "cache_creation_input_token_cost_above_12hr": "cache_write_12h_per_mtok",
    "cache_creation_input_token_cost": "cache_write",
    "output_cost_per_reasoning_token": "reasoning_per_mtok",
    "input_cost_per_audio_token": "input_audio_per_mtok",
    "output_cost_per_audio_token": "output_audio_per_mtok",
    "input_cost_per_image_token": "input_image_per_mtok",
    "output_cost_per_image_token": "output_image_per_mtok",
}
_TIERS = {"flex": "flex", "priority": "priority", "batches": "batch", "ultrafast": "ultrafast"}
_KEY_RE = re.compile(
    r"^(?P<base>"
    + "|".join(sorted(map(re.escape, _TOKEN_KEYS), key=len, reverse=True))
    + r")(?:_above_(?P<k>\d+)k_tokens)?(?:_(?P<tier>"
    + "|".join(_TIERS)
    + r"))?$"
)
#: Keys that say something other than a price, or a price we deliberately do not need.
_NOT_PRICES = frozenset({"litellm_provider", "mode", "deprecation_date", "supported_regions"})
#: Providers whose unsplit cache writes are 30-minute writes (OpenAI's default retention).
_OPENAI_LIKE = frozenset({"openai", "azure", "text-completion-openai"})


class _Unrepresentable(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Converted:
    """A model of the map as a ``prices`` item, with what was noticed on the way."""

    model: str
    provider: str
    item: dict[str, Any]
    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A model of the map that is not imported, and why."""

    model: str
    reason: str


@dataclass(frozen=True, slots=True)
class Conversion:
    """What :func:`convert` made of a map."""

    models: tuple[Converted, ...]
    refused: tuple[Refusal, ...]
    skipped: int  # filtered out by provider


def _decimal(value: object, what: str) -> tuple[Decimal, bool]:
    """(per-Mtok price, rounded) of a per-token float (see the rounding rule)."""
    return _money(value, what, scale=1_000_000)


def _money(value: object, what: str, *, scale: int = 1) -> tuple[Decimal, bool]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Unrepresentable(f"{what} is not a number ({value!r})")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Unrepresentable(f"{what} is not finite")
    if value < 0:
        raise _Unrepresentable(f"{what} is negative ({value!r})")
    exact = Decimal(repr(value)) * scale
    rounded = exact.quantize(Decimal(1).scaleb(-GIVEN_PRICE_PLACES), rounding=ROUND_HALF_EVEN)
    if rounded == exact:
        return exact.normalize() if exact else Decimal(0), False
    if rounded == 0 or abs(rounded - exact) > exact / 10_000:
        raise _Unrepresentable(
            f"{what} = {value!r} is {exact} per {'Mtok' if scale > 1 else 'request'}, which 6"
            " decimals cannot represent within 0.01 %"
        )
    return rounded.normalize(), True


def _plain(value: Decimal) -> str:
    return format(value, "f")


def convert(
    data: Mapping[str, Any],
    *,
    providers: Iterable[str] | None = None,
    strict: bool = False,
    markup_pct: Decimal | None = None,
) -> Conversion:
    """Every model of a LiteLLM price map as a rate-card ``prices`` item, or a refusal.

    Args:
        data: the parsed JSON (``sample_spec`` is skipped).
        providers: only models whose ``litellm_provider`` is one of these.
        strict: refuse models whose prices had to be rounded.
        markup_pct: percent added to every price (the item is checked to rate exactly with
            it; the markup itself is applied by the caller's price).

    Returns:
        The converted models (sorted by id) and the refused ones with their reasons.
    """
    wanted = set(providers) if providers is not None else None
    models: list[Converted] = []
    refused: list[Refusal] = []
    skipped = 0
    for model in sorted(data):
        entry = data[model]
        if model == "sample_spec":
            continue
        if not isinstance(entry, Mapping):
            refused.append(Refusal(model, "not an object"))
            continue
        provider = str(entry.get("litellm_provider") or "unknown")
        if wanted is not None and provider not in wanted:
            skipped += 1
            continue
        try:
            item, flags = _convert_one(model, provider, entry, strict=strict)
            price = price_from_item(item, model)
            if markup_pct is not None:
                price.with_markup(markup_pct)
        except _Unrepresentable as exc:
            refused.append(Refusal(model, str(exc)))
            continue
        except DomainError as exc:
            refused.append(Refusal(model, exc.detail))
            continue
        models.append(Converted(model, provider, item, tuple(flags)))
    return Conversion(tuple(models), tuple(refused), skipped)


def _convert_one(
    model: str, provider: str, entry: Mapping[str, Any], *, strict: bool
) -> tuple[dict[str, Any], list[str]]:
    """One LiteLLM entry as a ``prices`` item, with its flags (rounded, not imported, ...).

    Raises:
        _Unrepresentable: the entry cannot be priced (why is the message).
    """
    if not ID_RE.match(model):
        raise _Unrepresentable("its name is not a catalog model id (1-128 of A-Z a-z 0-9 ._:@+/-)")
    mode = entry.get("mode")
    if mode is not None and mode not in TOKEN_MODES:
        raise _Unrepresentable(f"mode {mode!r} is not priced per token")
    if "input_cost_per_token" not in entry:
        raise _Unrepresentable("no input_cost_per_token (not priced per token)")
    read = _read_entry(entry, provider)
    if read.rounded:
        if strict:
            raise _Unrepresentable(
                f"prices needing rounding (strict): {', '.join(sorted(read.rounded))}"
            )
        read.flags.append(f"rounded: {', '.join(sorted(read.rounded))}")
    if read.ignored:
        read.flags.append(f"not imported: {', '.join(sorted(read.ignored))}")
    return _item(model, mode, read), read.flags


@dataclass
class _Read:
    """What an entry's keys give.

    Token prices by service tier (``None``: the standard prices) and context threshold
    (``None``: none), fees, and what was rounded or ignored.
    """

    found: dict[str | None, dict[int | None, dict[str, Decimal]]] = field(default_factory=dict)
    fees: dict[str, Decimal] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    rounded: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)


def _read_entry(entry: Mapping[str, Any], provider: str) -> _Read:
    """Every price key of an entry, read into a :class:`_Read`."""
    read = _Read()
    write_field = (
        "cache_write_30m_per_mtok" if provider in _OPENAI_LIKE else "cache_write_5m_per_mtok"
    )
    for key, value in entry.items():
        if key in _NOT_PRICES or not ("cost" in key or "price" in key or "tiered" in key):
            continue
        m = _KEY_RE.match(key)
        if m is not None:
            price, was_rounded = _decimal(value, key)
            if was_rounded:
                read.rounded.append(key)
            field_name = _TOKEN_KEYS[m["base"]]
            if field_name == "cache_write":
                field_name = write_field
            tier = _TIERS[m["tier"]] if m["tier"] else None
            above = int(m["k"]) * 1000 if m["k"] else None
            read.found.setdefault(tier, {}).setdefault(above, {})[field_name] = price
        elif not _read_fee(key, value, read) and not _is_zero(value):
            read.ignored.append(key)  # a dimension priced 0 costs nothing, mapped or not
    return read


def _read_fee(key: str, value: object, read: _Read) -> bool:
    """Read a per-request fee key into ``read``; ``False`` when ``key`` is not a fee."""
    if key == "search_context_cost_per_query" and isinstance(value, Mapping):
        medium = value.get("search_context_size_medium")
        if medium is None:
            read.ignored.append(key)
            return True
        read.fees["web_search"], r = _money(medium, f"{key}.search_context_size_medium")
        if len(set(value.values())) > 1:
            read.flags.append("web_search priced at the medium search context size")
    elif key == "code_interpreter_cost_per_session":
        read.fees["code_execution"], r = _money(value, key)
    elif key == "file_search_cost_per_1k_calls":
        fee, r = _money(value, key)
        read.fees["file_search"] = (fee / 1000).normalize()
    else:
        return False
    if r:
        read.rounded.append(key)
    return True


def _item(model: str, mode: object, read: _Read) -> dict[str, Any]:
    """The ``prices`` item of what was read (flags a missing output price in ``read``)."""
    found = read.found
    base = found.get(None, {}).get(None, {})
    if "output_per_mtok" not in base:
        base["output_per_mtok"] = Decimal(0)
        if mode not in (None, "embedding"):
            read.flags.append("no output price: output priced 0")
    item: dict[str, Any] = {"model": model, **{k: _plain(v) for k, v in base.items()}}
    bands = _bands(found.get(None, {}), base)
    if bands:
        item["context_tiers"] = bands
    if read.fees:
        item["request_fees"] = {k: _plain(v) for k, v in sorted(read.fees.items())}
    tiers: dict[str, Any] = {}
    for tier, by_band in sorted((t, b) for t, b in found.items() if t is not None):
        own = {**base, **by_band.get(None, {})}
        spec: dict[str, Any] = {k: _plain(v) for k, v in own.items()}
        tier_bands = _bands(by_band, own, fallback=found.get(None, {}))
        if tier_bands:
            spec["context_tiers"] = tier_bands
        tiers[tier] = spec
    if tiers:
        item["service_tiers"] = tiers
    return item


def _bands(
    by_band: Mapping[int | None, Mapping[str, Decimal]],
    base: Mapping[str, Decimal],
    *,
    fallback: Mapping[int | None, Mapping[str, Decimal]] | None = None,
) -> list[dict[str, Any]]:
    """Context tiers, a band's missing prices taken from the base.

    LiteLLM prices a component without an ``_above_`` price at its standard price.
    """
    out = []
    thresholds = sorted({k for k in by_band if k is not None} | {k for k in (fallback or {}) if k})
    for above in thresholds:
        prices = {**base, **(fallback or {}).get(above, {}), **by_band.get(above, {})}
        out.append({"above_input_tokens": above, **{k: _plain(v) for k, v in prices.items()}})
    return out


def _is_zero(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return value == 0
    if isinstance(value, Mapping):
        return all(_is_zero(v) for v in value.values())
    return False
