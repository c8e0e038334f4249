"""Burn order: which lots pay for what, as a pure function (no database).

Default order: plan quota → token packages (earliest expiry first) → bonus money (earliest
expiry first) → paid money → overage (within the credit limit). An account may set its own
permutation. Within a kind, lots with a higher priority go first, then the earliest expiry
(never-expiring last), then the oldest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from wallet.errors import InvalidRequest

PLAN, PACKAGE, BONUS, PAID, OVERAGE = "plan", "package", "bonus", "paid", "overage"
DEFAULT_BURN_ORDER: tuple[str, ...] = (PLAN, PACKAGE, BONUS, PAID, OVERAGE)
MONEY_KINDS = frozenset({BONUS, PAID})


def validate_burn_order(order: Sequence[str] | None) -> tuple[str, ...]:
    """The account's order, checked to be a permutation of the five sources.

    Raises:
        InvalidRequest: unknown, missing or repeated sources.
    """
    if order is None:
        return DEFAULT_BURN_ORDER
    got = tuple(order)
    if sorted(got) != sorted(DEFAULT_BURN_ORDER):
        raise InvalidRequest(
            f"burn_order must list each of {', '.join(DEFAULT_BURN_ORDER)} exactly once;"
            f" got {list(got)}"
        )
    return got


@dataclass(frozen=True, slots=True)
class LotView:
    """What the burn order needs to know about a lot."""

    id: int
    kind: str
    remaining: int
    expires_at: datetime | None
    priority: int = 0
    models: tuple[str, ...] = ()

    def covers(self, model: str | None) -> bool:
        """A package scoped to models covers only those; an unscoped lot covers everything."""
        return not self.models or model is None or model in self.models


@dataclass(frozen=True, slots=True)
class Allocation:
    """Take ``atoms`` from lot ``lot_id`` (of ``kind``)."""

    lot_id: int
    kind: str
    atoms: int


#: Sorts after every real expiry: lots that never expire are used last within their kind.
NEVER = datetime.max.replace(tzinfo=UTC)


def _sort_key(order: Sequence[str], lot: LotView) -> tuple[int, int, datetime, int]:
    return (order.index(lot.kind), -lot.priority, lot.expires_at or NEVER, lot.id)


def allocate(
    lots: Iterable[LotView],
    amount: int,
    *,
    order: Sequence[str] = DEFAULT_BURN_ORDER,
    kinds: frozenset[str] = MONEY_KINDS,
    model: str | None = None,
    at: datetime | None = None,
) -> tuple[list[Allocation], int]:
    """Draw ``amount`` atoms from lots of ``kinds`` in burn order.

    Returns:
        The allocations and the shortfall (0 when the lots covered everything).
    """
    if amount < 0:
        raise InvalidRequest("cannot allocate a negative amount")
    usable = [
        lot
        for lot in lots
        if lot.kind in kinds
        and lot.remaining > 0
        and lot.covers(model)
        and (at is None or lot.expires_at is None or lot.expires_at > at)
    ]
    usable.sort(key=lambda lot: _sort_key(order, lot))
    left = amount
    out: list[Allocation] = []
    for lot in usable:
        if left == 0:
            break
        take = min(left, lot.remaining)
        out.append(Allocation(lot.id, lot.kind, take))
        left -= take
    return out, left
