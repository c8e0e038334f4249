"""Usage records as the gateway path receives them (pure; no database)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from plans.rating import Tokens


# not frozen: a frozen dataclass's __init__ costs ~2 us more a record on the gateway path
# (bench/README.md); treat it as immutable
@dataclass(slots=True)
class UsageIn:
    """One normalized usage record."""

    id: str
    account_id: str
    model: str
    occurred_at: datetime
    tokens: Tokens
    batch: bool = False
    http_status: int = 200
    finish_reason: str | None = None
    truncated: bool = False
    authorization_id: str | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)
    #: the service tier it was served in (``None``: standard)
    service_tier: str | None = None
    #: the upstream vendor that served it, if the gateway says (cost and margin)
    upstream: str | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record refused before charging (bad shape); carried through to keep request order."""

    id: str
    reason: str
    detail: str
