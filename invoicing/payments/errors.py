"""Payment errors (stable codes, mapped to HTTP in api/errors.py)."""

from __future__ import annotations

from ledger.errors import DomainError


class PaymentProviderError(DomainError):
    """The payment provider refused a request or could not be reached; nothing was changed."""

    code = "payment_provider_error"


class InvalidWebhook(DomainError):
    """A webhook whose signature does not verify or whose body is not an event.

    Wrong secret, tampered body, stale timestamp.
    """

    code = "invalid_webhook_signature"


class PaymentMismatch(DomainError):
    """The provider reports a payment that disagrees with ours (amount or currency)."""

    code = "payment_mismatch"
