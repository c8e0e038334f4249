"""Domain errors of the catalog's database layer (the pure ones are in :mod:`plans.errors`).

Missing catalog objects raise :class:`ledger.errors.NotFound` (``not_found``).
"""

from __future__ import annotations

from ledger.errors import DomainError


class CatalogConflict(DomainError):
    """A catalog object that already exists (same id, or same currency and effective instant)."""

    code = "conflict"


class BackdatedPriceChange(DomainError):
    """A price change that would take effect at or before usage already priced.

    A rate card, contract or reseller price book must start after the latest usage already
    priced in its currency: otherwise it would reprice history.
    """

    code = "backdated_price_change"
