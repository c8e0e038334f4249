"""The burn order.

Its sources and their default order, and the check of an account's own order (the burn-down itself
is ``wallet/burndown.py``).

Default order: plan quota → token packages (earliest expiry first) → bonus money (earliest
expiry first) → paid money → overage (within the credit limit). An account may set its own
permutation. Within a kind, lots with a higher priority go first, then the earliest expiry
(never-expiring last), then the oldest.
"""

from __future__ import annotations

from collections.abc import Sequence
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


#: Sorts after every real expiry: lots that never expire are used last within their kind.
NEVER = datetime.max.replace(tzinfo=UTC)
