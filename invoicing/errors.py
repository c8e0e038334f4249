"""Invoicing domain errors (stable codes, mapped to HTTP in api/errors.py)."""

from __future__ import annotations

from ledger.errors import DomainError


class InvalidPeriod(DomainError):
    """A billing period that is not ``YYYY-MM``."""

    code = "invalid_period"


class PeriodNotEnded(DomainError):
    """A close asked for before the period ended plus its grace period for late usage."""

    code = "period_not_ended"


class PeriodOrder(DomainError):
    """A close of a period earlier than one that is already closed."""

    code = "period_out_of_order"


class InvoiceState(DomainError):
    """An operation the invoice's status does not allow (e.g. editing a finalized invoice)."""

    code = "invoice_state"


class CreditTooLarge(DomainError):
    """A credit note for more than is left to credit on the invoice or line."""

    code = "credit_exceeds_invoice"


class PaymentTooLarge(DomainError):
    """A payment for more than the invoice's open balance."""

    code = "payment_exceeds_balance"


class InvalidBilling(DomainError):
    """Billing settings that make no sense (net terms, tax rate, unknown tax profile)."""

    code = "validation_error"


class NotABillingAccount(DomainError):
    """An invoice asked of a reseller's sub-account (its usage is billed to the reseller)."""

    code = "validation_error"


class InvoiceExists(DomainError):
    """A preview asked for a period whose invoice exists already."""

    code = "invoice_exists"
