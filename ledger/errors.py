"""Domain errors of the ledger.

Every domain error carries a stable machine ``code``; ``api/errors.py`` maps codes to HTTP
statuses and RFC 9457 problem types in one table. Packages above the ledger subclass
:class:`DomainError` for their own errors.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base class for errors a caller can act on. ``code`` is stable; ``detail`` is for people."""

    code: str = "domain_error"

    def __init__(self, detail: str, **extra: Any) -> None:
        """Keep ``detail`` (the message) and ``extra`` (fields for the error body)."""
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class UnknownUnit(DomainError):
    """A currency or unit code that this build does not know."""

    code = "unknown_currency"


class MixedUnits(DomainError):
    """Arithmetic or a posting combined amounts of different units."""

    code = "mixed_units"


class InvalidAmount(DomainError):
    """An amount that cannot be represented exactly in its unit, or is out of range."""

    code = "invalid_amount"


class UnbalancedEntry(DomainError):
    """A journal entry whose postings do not sum to zero per book and unit."""

    code = "unbalanced_entry"


class InvalidEntry(DomainError):
    """A journal entry that is malformed (no postings, zero amounts, unknown accounts...)."""

    code = "invalid_entry"


class InsufficientFunds(DomainError):
    """A posting would take an account that forbids negative balances below zero."""

    code = "insufficient_funds"


class NotFound(DomainError):
    """A resource that does not exist or that the caller may not see."""

    code = "not_found"


class IdempotencyConflict(DomainError):
    """An idempotency key reused with different content."""

    code = "idempotency_conflict"


class HoldNotPending(DomainError):
    """A hold that was already posted, voided or expired."""

    code = "hold_not_pending"


class HoldExceeded(DomainError):
    """A hold posted for more than it reserved on some account."""

    code = "hold_exceeded"


class AlreadyReversed(DomainError):
    """An entry that has already been reversed."""

    code = "already_reversed"
