"""Card payments wiring: the Stripe gateway from settings, and the transactions around webhooks.

The payment services in ``invoicing.payments`` never commit; this module (and the HTTP routes,
CLI and scheduler jobs that use it) owns the transactions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from api.settings import Settings
from invoicing.payments.checkout import CheckoutUrls
from invoicing.payments.events import EventResult, receive_event, record_failure
from invoicing.payments.gateway import PaymentGateway
from wallet.topups import PaymentsNotConfigured

log = logging.getLogger(__name__)


def gateway_from_settings(settings: Settings) -> PaymentGateway | None:
    """The Stripe gateway when ``STRIPE_API_KEY`` and ``STRIPE_WEBHOOK_SECRET`` are both set.

    None otherwise: card payments then answer ``payments_not_configured``.
    """
    if settings.stripe_api_key is None or settings.stripe_webhook_secret is None:
        return None
    from invoicing.payments.stripe_gateway import StripeGateway

    return StripeGateway(
        settings.stripe_api_key.get_secret_value(),
        settings.stripe_webhook_secret.get_secret_value(),
        tolerance_seconds=settings.stripe_webhook_tolerance_seconds,
    )


def require_gateway(gateway: PaymentGateway | None) -> PaymentGateway:
    """The configured gateway.

    Raises:
        PaymentsNotConfigured: no Stripe keys in this deployment.
    """
    if gateway is None:
        raise PaymentsNotConfigured(
            "card payments need STRIPE_API_KEY and STRIPE_WEBHOOK_SECRET; this deployment has"
            " no Stripe keys. Bank-transfer top-ups and wallet purchases work without them."
        )
    return gateway


def checkout_urls(
    settings: Settings, success_url: str | None = None, cancel_url: str | None = None
) -> CheckoutUrls:
    """The request's return URLs, or the configured defaults."""
    return CheckoutUrls(
        success_url=success_url or settings.stripe_success_url,
        cancel_url=cancel_url or settings.stripe_cancel_url,
    )


class WebhookProcessingFailed(Exception):
    """Processing a verified event raised.

    Its effect was rolled back and it is stored as failed (the provider retries on a non-2xx answer,
    and so does a job).
    """

    def __init__(self, event_id: str, cause: BaseException) -> None:
        """Name the failed event and keep what it raised.

        Args:
            event_id: the provider's id of the event.
            cause: the exception its processing raised.
        """
        super().__init__(f"event {event_id} failed: {type(cause).__name__}: {cause}")
        self.event_id = event_id
        self.cause = cause


@dataclass(frozen=True, slots=True)
class WebhookAck:
    """What to answer the provider."""

    event_id: str
    event_type: str
    result: EventResult


def handle_stripe_webhook(
    session: Session, gateway: PaymentGateway, payload: bytes, signature: str | None
) -> WebhookAck:
    """Verify, store and process one webhook delivery, committing its effect with the event.

    Raises:
        InvalidWebhook: the signature does not verify (nothing is stored or changed).
        WebhookProcessingFailed: processing raised; the event is stored as failed.
    """
    event: dict[str, Any] = gateway.verify_webhook(payload, signature)
    try:
        result = receive_event(session, event)
        session.commit()
    except Exception as exc:
        session.rollback()
        log.exception("Stripe event %s (%s) failed", event.get("id"), event.get("type"))
        try:
            record_failure(session, event, exc)
            session.commit()
        except Exception:
            session.rollback()
            log.exception("could not record the failure of Stripe event %s", event.get("id"))
        raise WebhookProcessingFailed(str(event.get("id")), exc) from exc
    return WebhookAck(str(event["id"]), str(event.get("type", "")), result)
