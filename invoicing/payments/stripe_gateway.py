"""The Stripe adapter: the only module that imports the ``stripe`` SDK.

Uses ``stripe.StripeClient`` and its ``v1`` namespace (SDK 16.x, API version pinned by the SDK),
our own idempotency keys on every POST, and ``construct_event`` on the raw body for webhooks.
Card data never reaches us: customers pay on Stripe's hosted Checkout page. Secrets are passed
in by the composition root (from settings) and never logged or shown in ``repr``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import stripe

from invoicing.payments.errors import InvalidWebhook, PaymentProviderError
from invoicing.payments.gateway import (
    BalanceTransaction,
    CheckoutRequest,
    CheckoutSession,
    ProviderRefund,
)

DEFAULT_TOLERANCE_SECONDS = 300


def _ts(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


def _id_of(value: Any) -> str | None:
    """An object's id whether the field holds the id or the expanded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _provider_error(action: str, exc: stripe.StripeError) -> PaymentProviderError:
    message = exc.user_message or type(exc).__name__
    return PaymentProviderError(
        f"Stripe could not {action}: {message}",
        provider_code=exc.code,
        provider_status=exc.http_status,
    )


class StripeGateway:
    """:class:`invoicing.payments.gateway.PaymentGateway` on Stripe.

    Args:
        api_key: the secret key (``sk_live_...`` / ``sk_test_...`` or a restricted key).
        webhook_secret: the endpoint's signing secret (``whsec_...``).
        http_client: a ``stripe.HTTPClient`` (tests inject an offline one).
        tolerance_seconds: how old a webhook's signed timestamp may be.
        max_network_retries: the SDK's own retries (safe: every POST carries our key).
    """

    name = "stripe"

    def __init__(
        self,
        api_key: str,
        webhook_secret: str,
        *,
        http_client: stripe.HTTPClient | None = None,
        tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
        max_network_retries: int = 2,
    ) -> None:
        """Make a client of the Stripe account of ``api_key`` (the arguments: see the class)."""
        self._client = stripe.StripeClient(
            api_key, http_client=http_client, max_network_retries=max_network_retries
        )
        self._webhook_secret = webhook_secret
        self._tolerance_seconds = tolerance_seconds

    def __repr__(self) -> str:
        """Name the gateway without its secrets."""
        return "StripeGateway(api_key=**********, webhook_secret=**********)"

    def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        """A Checkout Session in payment mode for one line (see the protocol)."""
        metadata = dict(request.metadata)
        params: dict[str, Any] = {
            "mode": "payment",
            "client_reference_id": request.payment_id,
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": request.currency.lower(),
                        "unit_amount": request.amount_minor,
                        "product_data": {"name": request.product_name},
                    },
                }
            ],
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
        }
        try:
            session = self._client.v1.checkout.sessions.create(
                params=cast(Any, params), options={"idempotency_key": request.idempotency_key}
            )
        except stripe.StripeError as exc:
            raise _provider_error("create the checkout session", exc) from exc
        data = session.to_dict()
        if not data.get("url"):
            raise PaymentProviderError("Stripe created a checkout session without a URL")
        return CheckoutSession(
            id=str(data["id"]),
            url=str(data["url"]),
            expires_at=_ts(data.get("expires_at")),
            payment_intent_id=_id_of(data.get("payment_intent")),
        )

    def refund(
        self,
        *,
        payment_intent_id: str,
        amount_minor: int,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> ProviderRefund:
        """A refund of ``amount_minor`` on the payment intent, with its charge expanded.

        So the charge's cumulative ``amount_refunded`` comes back in the same call.
        """
        params: dict[str, Any] = {
            "payment_intent": payment_intent_id,
            "amount": amount_minor,
            "metadata": dict(metadata),
            "expand": ["charge"],
        }
        try:
            refund = self._client.v1.refunds.create(
                params=cast(Any, params), options={"idempotency_key": idempotency_key}
            )
        except stripe.StripeError as exc:
            raise _provider_error("refund the payment", exc) from exc
        data = refund.to_dict()
        charge = data.get("charge")
        refunded_total = None
        if isinstance(charge, dict) and charge.get("amount_refunded") is not None:
            refunded_total = int(charge["amount_refunded"])
        return ProviderRefund(
            id=str(data["id"]),
            status=str(data.get("status")),
            amount_minor=int(data["amount"]),
            charge_id=_id_of(charge),
            charge_amount_refunded_minor=refunded_total,
        )

    def balance_transactions(self, start: datetime, end: datetime) -> list[BalanceTransaction]:
        """Balance transactions created in ``[start, end)``, with their sources expanded.

        The source names the payment intent each transaction belongs to.
        """
        params: dict[str, Any] = {
            "created": {"gte": int(start.timestamp()), "lt": int(end.timestamp())},
            "limit": 100,
            "expand": ["data.source"],
        }
        out: list[BalanceTransaction] = []
        try:
            page = self._client.v1.balance_transactions.list(params=cast(Any, params))
            for item in page.auto_paging_iter():
                bt = item.to_dict()
                source = bt.get("source")
                pi = None
                if isinstance(source, dict):
                    pi = _id_of(source.get("payment_intent"))
                created = _ts(bt["created"])
                assert created is not None
                out.append(
                    BalanceTransaction(
                        id=str(bt["id"]),
                        type=str(bt["type"]),
                        currency=str(bt["currency"]).upper(),
                        amount_minor=int(bt["amount"]),
                        fee_minor=int(bt.get("fee") or 0),
                        net_minor=int(bt.get("net") or 0),
                        created_at=created,
                        source_id=_id_of(source),
                        payment_intent_id=pi,
                    )
                )
        except stripe.StripeError as exc:
            raise _provider_error("list balance transactions", exc) from exc
        return out

    def verify_webhook(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """``construct_event`` on the raw body.

        Signature and timestamp tolerance checked before anything is parsed; returns the event as
        plain JSON data.
        """
        try:
            self._client.construct_event(
                payload, signature, self._webhook_secret, tolerance=self._tolerance_seconds
            )
        except stripe.SignatureVerificationError as exc:
            raise InvalidWebhook(
                f"the Stripe-Signature header does not verify: {exc.user_message or exc}"
            ) from exc
        except ValueError as exc:
            raise InvalidWebhook(f"the webhook body is not a Stripe event: {exc}") from exc
        event = json.loads(payload)
        if not isinstance(event, dict) or event.get("object") != "event" or not event.get("id"):
            raise InvalidWebhook("the webhook body is not a Stripe event")
        return event
