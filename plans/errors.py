"""Domain errors of the catalog and rating.

Each error carries a stable machine ``code`` (see :class:`ledger.errors.DomainError`);
``api/`` maps codes to HTTP statuses in one table.
"""

from __future__ import annotations

from ledger.errors import DomainError


class UnknownModel(DomainError):
    """The rate card (or price book) in force does not price the requested model."""

    code = "unknown_model"


class NoRateInForce(DomainError):
    """No rate card is in force at the requested instant (before the first card)."""

    code = "no_rate_in_force"


class InvalidPrice(DomainError):
    """A price or percentage that is malformed, negative, too fine, or would not rate exactly."""

    code = "invalid_price"


class InvalidCatalog(DomainError):
    """A catalog object that is structurally wrong (naive datetime, duplicates, bad keys...)."""

    code = "validation_error"


class InvalidUsage(DomainError):
    """Usage quantities that cannot be rated (negative, non-integer, reasoning > output...)."""

    code = "invalid_usage"
