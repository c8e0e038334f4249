"""Wallet domain errors (stable codes, mapped to HTTP in api/errors.py)."""

from __future__ import annotations

from ledger.errors import DomainError


class InvalidRequest(DomainError):
    """Input that is well-formed JSON but makes no sense for the wallet."""

    code = "validation_error"


class ReferenceUsed(DomainError):
    """A bank transfer's reference was already recorded as another top-up."""

    code = "reference_used"


class Conflict(DomainError):
    """The request conflicts with the current state (e.g. a second live subscription)."""

    code = "conflict"


class RefundTooLarge(DomainError):
    """A refund larger than the top-up's unspent paid credit."""

    code = "refund_exceeds_unspent"


class AccountClosed(DomainError):
    """The account is closed: nothing about it can change any more."""

    code = "account_closed"


class AccountNotEmpty(DomainError):
    """An account cannot be closed while money, tokens, debts or open authorizations remain."""

    code = "account_not_empty"
