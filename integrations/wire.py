"""What the tokenwallet HTTP API sends back, parsed into exact, typed values.

Amounts on the wire are decimal strings (``{"amount": "1.50", "currency": "USD"}``) or whole
token counts (``{"tokens": 1000}``); they become :class:`decimal.Decimal` and ``int`` here and
never pass through ``float``. JSON bodies are decoded with ``parse_float=Decimal`` so even a
stray JSON number with a fraction stays exact.
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

#: Arithmetic context for amounts: wide enough for 18-decimal atoms of large sums, and any
#: rounding at all raises instead of silently losing an atom.
EXACT = decimal.Context(
    prec=80,
    traps=[decimal.Inexact, decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)

MTOK = Decimal(1_000_000)


class TokenwalletError(Exception):
    """A final error answer (problem+json) from tokenwallet.

    Attributes:
        status: the HTTP status.
        code: the problem's stable ``code`` (e.g. ``authorization_closed``).
        detail: the problem's human-readable ``detail``.
    """

    def __init__(self, status: int, code: str, detail: str) -> None:
        """Keep the answer's status, code and detail; the message joins the three."""
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class TokenwalletUnavailable(TokenwalletError):
    """Retries were exhausted (connection errors, timeouts, 429 or 5xx answers)."""


def loads(content: bytes) -> Any:
    """Decode a JSON body; fractional numbers become ``Decimal``, never ``float``.

    Args:
        content: the raw body.

    Returns:
        The decoded value.
    """
    return json.loads(content, parse_float=Decimal)


def dumps(value: Any) -> bytes:
    """Encode a JSON body; ``Decimal`` becomes a decimal string, aware datetimes RFC 3339.

    Args:
        value: what to encode.

    Returns:
        UTF-8 JSON.

    Raises:
        TypeError: a ``float`` anywhere in ``value`` (money and tokens are never floats), a
            naive datetime, or a value JSON cannot carry.
    """
    return json.dumps(plain(value), separators=(",", ":")).encode()


def plain(value: Any) -> Any:
    """``value`` with ``Decimal`` and ``datetime`` turned into strings, floats refused.

    Args:
        value: a JSON-like value.

    Returns:
        A value ``json.dumps`` encodes exactly.

    Raises:
        TypeError: a ``float`` or a naive datetime in ``value``.
    """
    if isinstance(value, float):
        raise TypeError(f"floats are not accepted ({value!r}): use int or a decimal string")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError(f"naive datetime {value!r}: timestamps need a UTC offset")
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def to_decimal(value: Any, what: str) -> Decimal:
    """An exact decimal from a decimal string, ``int`` or ``Decimal`` (``float`` refused).

    Args:
        value: the value to convert.
        what: its name, for the error message.

    Returns:
        The value as a finite ``Decimal``.

    Raises:
        TypeError: ``value`` is a float, a bool or of another type.
        ValueError: ``value`` is not a finite decimal number.
    """
    if isinstance(value, float):
        raise TypeError(f"{what} is a float ({value!r}): use a decimal string, int or Decimal")
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise TypeError(f"{what} must be a decimal string, int or Decimal, not {value!r}")
    try:
        result = Decimal(value)
    except decimal.InvalidOperation:
        raise ValueError(f"{what} is not a decimal number: {value!r}") from None
    if not result.is_finite():
        raise ValueError(f"{what} must be finite, got {value!r}")
    return result


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount of a currency."""

    amount: Decimal
    currency: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Money:
        """Parse ``{"amount": "1.50", "currency": "USD"}``."""
        return cls(to_decimal(data["amount"], "amount"), str(data["currency"]))


def quantity(data: Mapping[str, Any]) -> Decimal:
    """The size of a grant's amount: money (``{"amount", "currency"}``) or ``{"tokens": n}``.

    Args:
        data: the wire form.

    Returns:
        The amount, or the token count, as an exact ``Decimal``.
    """
    if "tokens" in data:
        tokens = data["tokens"]
        if isinstance(tokens, bool) or not isinstance(tokens, int):
            raise TypeError(f"tokens must be an integer, got {tokens!r}")
        return Decimal(tokens)
    return to_decimal(data["amount"], "amount")


@dataclass(frozen=True, slots=True)
class Price:
    """An account's effective price of one model, per million tokens.

    Rating is exact decimal arithmetic, the same sum the server computes::

        cost = (input*in + cache_read*cr + cw5m*w5 + cw1h*w1
                + (output - reasoning)*out + reasoning*reas) / 1e6

    less ``batch_discount_pct`` percent for batch requests.
    """

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal
    cache_write_5m_per_mtok: Decimal
    cache_write_1h_per_mtok: Decimal
    reasoning_per_mtok: Decimal
    batch_discount_pct: Decimal

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Price:
        """Parse the ``price`` object of an authorization (decimal strings)."""

        def get(name: str, default: str | None = None) -> Decimal:
            raw = data.get(name, default)
            if raw is None:
                raise ValueError(f"price has no {name}")
            return to_decimal(raw, name)

        output = get("output_per_mtok")
        return cls(
            input_per_mtok=get("input_per_mtok"),
            output_per_mtok=output,
            cache_read_per_mtok=get("cache_read_per_mtok"),
            cache_write_5m_per_mtok=get("cache_write_5m_per_mtok"),
            cache_write_1h_per_mtok=get("cache_write_1h_per_mtok"),
            reasoning_per_mtok=get("reasoning_per_mtok", str(output)),
            batch_discount_pct=get("batch_discount_pct", "0"),
        )

    def cost(self, tokens: Mapping[str, int], *, batch: bool = False) -> Decimal:
        """What a call with these token counts costs, exactly.

        Args:
            tokens: ``input_tokens``, ``output_tokens``, ``cache_read_tokens``,
                ``cache_write_5m_tokens``, ``cache_write_1h_tokens``, ``reasoning_tokens``
                (absent ones count 0; ``reasoning_tokens`` is part of ``output_tokens``).
            batch: the call went through a batch API (the batch discount applies).

        Returns:
            The cost in the account's currency.

        Raises:
            TypeError: a count that is not an ``int``.
            ValueError: a negative count, or reasoning above output.
        """
        n = {name: _count(tokens, name) for name in _TOKEN_FIELDS}
        if n["reasoning_tokens"] > n["output_tokens"]:
            raise ValueError("reasoning_tokens is part of output_tokens and cannot exceed it")
        with decimal.localcontext(EXACT):
            total = (
                n["input_tokens"] * self.input_per_mtok
                + n["cache_read_tokens"] * self.cache_read_per_mtok
                + n["cache_write_5m_tokens"] * self.cache_write_5m_per_mtok
                + n["cache_write_1h_tokens"] * self.cache_write_1h_per_mtok
                + (n["output_tokens"] - n["reasoning_tokens"]) * self.output_per_mtok
                + n["reasoning_tokens"] * self.reasoning_per_mtok
            ) / MTOK
            if batch:
                total = total * (100 - self.batch_discount_pct) / 100
            return total


_TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
)


def _count(tokens: Mapping[str, int], name: str) -> int:
    value = tokens.get(name) or 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class GrantState:
    """A multi-capture authorization's amounts at one moment (``Decimal``: money or tokens).

    ``released`` is derived (``held - captured - remaining`` while open): what the server gave
    back because the wallet could no longer back it. ``held``, ``captured`` and ``released``
    only ever grow on the server, which lets out-of-order observations be merged.
    """

    id: str
    status: str
    held: Decimal
    captured: Decimal
    remaining: Decimal
    final: bool

    @property
    def is_open(self) -> bool:
        """Whether usage can still capture it."""
        return self.status == "approved"

    @property
    def released(self) -> Decimal:
        """What the server released (meaningful while open)."""
        with decimal.localcontext(EXACT):
            return self.held - self.captured - self.remaining

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GrantState:
        """Parse the ``authorization`` object of a usage result (or an AuthView)."""
        held = data.get("held")
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            held=quantity(held) if held else Decimal(0),
            captured=quantity(data["captured"]) if data.get("captured") else Decimal(0),
            remaining=quantity(data["remaining"]) if data.get("remaining") else Decimal(0),
            final=bool(data.get("final", False)),
        )


@dataclass(frozen=True, slots=True)
class Authorization:
    """A multi-capture authorization as the server answered it (AuthView)."""

    state: GrantState
    account_id: str
    model: str | None
    currency: str | None
    token_grant: bool
    expires_at: datetime
    decline_code: str | None
    price: Price | None
    granted: Decimal | None
    raw: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Authorization:
        """Parse an AuthView (grant, increment, void or GET answer)."""
        held = data.get("held") or {}
        granted = data.get("granted")
        price = data.get("price")
        return cls(
            state=GrantState.from_json(data),
            account_id=str(data["account_id"]),
            model=data.get("model"),
            currency=held.get("currency"),
            token_grant="tokens" in held,
            expires_at=datetime.fromisoformat(str(data["expires_at"])),
            decline_code=data.get("decline_code"),
            price=Price.from_json(price) if price else None,
            granted=quantity(granted) if granted else None,
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class UsageResult:
    """The final outcome of one usage record.

    Attributes:
        id: the record id.
        status: ``charged``, ``duplicate`` (a replay: the first result) or ``rejected``.
        billed: what was charged (``None`` when rejected).
        credited: what the failed-request policy or a cap credited.
        reason: the rejection or credit reason code.
        detail: a human-readable explanation.
        authorization: the multi-capture grant's state after this capture, if it named one.
    """

    id: str
    status: str
    billed: Money | None = None
    credited: Money | None = None
    reason: str | None = None
    detail: str | None = None
    authorization: GrantState | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UsageResult:
        """Parse one element of ``results``."""
        billed, credited, auth = data.get("billed"), data.get("credited"), data.get("authorization")
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            billed=Money.from_json(billed) if billed else None,
            credited=Money.from_json(credited) if credited else None,
            reason=data.get("reason"),
            detail=data.get("detail"),
            authorization=GrantState.from_json(auth) if auth else None,
        )

    @classmethod
    def rejected(cls, record_id: str, reason: str, detail: str) -> UsageResult:
        """A rejection made up by the client (the whole batch got a final error answer)."""
        return cls(id=record_id, status="rejected", reason=reason, detail=detail)
