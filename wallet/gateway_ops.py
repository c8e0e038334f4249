"""What the gateway path runs and answers.

Its operations, results and errors (the engine is :mod:`wallet.gateway`; callers import these names
from there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ledger.amounts import Amount
from ledger.errors import DomainError
from ledger.units import TOKENS, Unit
from plans.prices import ModelPrice
from plans.rating import Rating, Tokens
from wallet.accounts import EVERYTHING, Scope
from wallet.errors import Conflict
from wallet.maintenance import DEFAULT_RETENTION
from wallet.records import Rejected, UsageIn
from wallet.snapshot import AuthRow


class AuthorizationClosed(DomainError):
    """The authorization was voided, expired or captured; it cannot grant more."""

    code = "authorization_closed"
    status = 409


class NotMultiCapture(Conflict):
    """Increments apply to multi-capture authorizations only."""

    code = "not_multi_capture"


# -- operations ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChargeUsage:
    """Charge a batch of usage records (results in request order)."""

    records: Sequence[UsageIn | Rejected]
    scope: Scope = EVERYTHING
    retention: timedelta = DEFAULT_RETENTION


@dataclass(frozen=True, slots=True)
class Authorize:
    """Reserve what one call can cost at most (a single-use hold)."""

    account_id: str
    model: str
    estimated_input_tokens: int
    max_output_tokens: int
    ttl: timedelta
    scope: Scope = EVERYTHING


@dataclass(frozen=True, slots=True)
class Grant:
    """Open a multi-capture authorization of ``amount`` or ``tokens``, optionally for one model.

    ``amount`` is money, a decimal string in the account's currency; ``tokens`` counts package
    tokens; ``model``, when given, scopes the grant to that model.
    """

    account_id: str
    ttl: timedelta
    amount: str | None = None
    tokens: int | None = None
    model: str | None = None
    scope: Scope = EVERYTHING


@dataclass(frozen=True, slots=True)
class Increment:
    """Charge ``records`` (the usage so far), then ask a multi-capture authorization for more.

    ``ttl`` extends its life from now.
    """

    authorization_id: str
    amount: str | None = None
    tokens: int | None = None
    ttl: timedelta | None = None
    records: Sequence[UsageIn | Rejected] = ()
    scope: Scope = EVERYTHING
    retention: timedelta = DEFAULT_RETENTION


@dataclass(frozen=True, slots=True)
class Release:
    """Give an open authorization's reservation back.

    ``voided`` by the gateway, or ``expired`` by the expiry job (only if it has expired by then).
    Closed ones are left as they are.
    """

    authorization_id: str
    status: str = "voided"
    scope: Scope = EVERYTHING


Operation = ChargeUsage | Authorize | Grant | Increment | Release


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthorizationView:
    """An authorization as callers see it.

    Money amounts are atoms of ``currency``; token amounts whole tokens. For a multi-capture
    grant, ``granted`` and the other amounts are in its unit (``tokens`` for a token grant,
    else money); ``remaining`` is what it reserves now. For a single-use hold, ``held_money``
    and ``held_tokens`` are what it reserved.
    """

    id: str
    account_id: str
    status: str
    multi_capture: bool
    model: str | None
    currency: Unit
    token_grant: bool
    held_money: int
    held_tokens: int
    captured_money: int
    captured_tokens: int
    released_money: int
    released_tokens: int
    remaining: int
    captures: int
    final: bool
    plan_covered: bool
    expires_at: datetime
    decline_code: str | None
    price: ModelPrice | None = None
    granted_now: int | None = None
    usage: tuple[UsageResult, ...] | None = None

    @property
    def unit(self) -> Unit:
        """The unit of a grant's amounts."""
        return TOKENS if self.token_grant else self.currency

    @property
    def granted(self) -> int:
        """What was granted in total (a grant's unit)."""
        return self.held_tokens if self.token_grant else self.held_money

    @property
    def captured(self) -> int:
        """What records took from it (a grant's unit)."""
        return self.captured_tokens if self.token_grant else self.captured_money


# not frozen: a frozen dataclass's __init__ costs ~2 us more a record on the gateway path
# (bench/README.md); treat it as immutable
@dataclass(slots=True)
class UsageResult:
    """The outcome of one record.

    ``charged``, ``duplicate`` or ``rejected``; a record that captured from a multi-capture
    authorization carries its state after the capture.
    """

    id: str
    status: str
    billed: Amount | None = None
    credited: Amount | None = None
    reason: str | None = None
    detail: str | None = None
    authorization: AuthorizationView | None = None
    #: a charged record: its parsed tokens and how they were rated (the charge by component)
    tokens: Tokens | None = None
    rating: Rating | None = None


OperationResult = list[UsageResult] | AuthorizationView | DomainError


def view_of(auth: AuthRow, currency: Unit, **extra: Any) -> AuthorizationView:
    """How callers see an authorization.

    What a grant still reserves is ``granted - captured - released`` (every capture, re-reservation
    and release keeps it so).
    """
    if auth.status != "approved":
        remaining = 0
    elif auth.multi_capture:
        granted = auth.held_tokens if auth.token_grant else auth.held_money
        captured = auth.captured_tokens if auth.token_grant else auth.captured_money
        released = auth.released_tokens if auth.token_grant else auth.released_money
        remaining = granted - captured - released
    else:
        remaining = auth.held_money
    return AuthorizationView(
        id=auth.id,
        account_id=auth.account_id,
        status=auth.status,
        multi_capture=auth.multi_capture,
        model=auth.model,
        currency=currency,
        token_grant=auth.token_grant,
        held_money=auth.held_money,
        held_tokens=auth.held_tokens,
        captured_money=auth.captured_money,
        captured_tokens=auth.captured_tokens,
        released_money=auth.released_money,
        released_tokens=auth.released_tokens,
        remaining=remaining,
        captures=auth.captures,
        final=auth.final,
        plan_covered=auth.plan_covered,
        expires_at=auth.expires_at,
        decline_code=auth.decline_code,
        **extra,
    )


def closed_state(auth: AuthRow, now: datetime) -> str:
    """The authorization's status as an error detail: ``expired (at ...)`` once past its expiry."""
    if auth.status == "approved" and auth.expires_at <= now:
        return f"expired (at {auth.expires_at.isoformat()})"
    return auth.status
