"""What the payment services need from a payment provider, without naming one.

:class:`invoicing.payments.stripe_gateway.StripeGateway` implements it with the real Stripe SDK;
the rest of the code (and the wallet) depends only on this protocol and these plain values.
Amounts cross this boundary in the currency's minor units (what providers use), currencies as
upper-case ISO 4217 codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    """A hosted checkout page for one payment (the provider collects the card, never us)."""

    payment_id: str
    amount_minor: int
    currency: str
    product_name: str
    success_url: str
    cancel_url: str
    idempotency_key: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    """A created checkout: where to send the customer."""

    id: str
    url: str
    expires_at: datetime | None
    payment_intent_id: str | None


@dataclass(frozen=True, slots=True)
class ProviderRefund:
    """A refund made at the provider, with the charge's cumulative refunded amount after it."""

    id: str
    status: str
    amount_minor: int
    charge_id: str | None
    charge_amount_refunded_minor: int | None


@dataclass(frozen=True, slots=True)
class BalanceTransaction:
    """One movement of the provider balance (charge, refund, dispute adjustment, payout...)."""

    id: str
    type: str
    currency: str
    amount_minor: int
    fee_minor: int
    net_minor: int
    created_at: datetime
    source_id: str | None
    payment_intent_id: str | None


class PaymentGateway(Protocol):
    """A payment provider adapter."""

    name: str

    def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        """Create a hosted checkout for a payment (idempotent per ``request.idempotency_key``).

        Raises:
            PaymentProviderError: refused or unreachable.
        """
        ...

    def refund(
        self,
        *,
        payment_intent_id: str,
        amount_minor: int,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> ProviderRefund:
        """Refund part or all of a payment (idempotent per ``idempotency_key``).

        Raises:
            PaymentProviderError: refused or unreachable.
        """
        ...

    def balance_transactions(self, start: datetime, end: datetime) -> list[BalanceTransaction]:
        """Every balance transaction created in ``[start, end)``.

        Raises:
            PaymentProviderError: refused or unreachable.
        """
        ...

    def verify_webhook(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """Verify a webhook's signature on the raw body and return the event as plain data.

        Raises:
            InvalidWebhook: bad or missing signature, stale timestamp, or not an event.
        """
        ...
