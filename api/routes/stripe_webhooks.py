"""``POST /v1/webhooks/stripe``: events from Stripe (not behind API-key auth: Stripe calls it).

The signature is verified on the raw body before anything is parsed or stored; a bad signature
or a stale timestamp answers 400 and changes nothing. A verified event is stored unique by its
id in the same transaction as its effect: a redelivery answers 200 ``duplicate``; a processing
failure answers 500 (Stripe retries) and leaves the event stored as ``failed``.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Response, post
from litestar.datastructures import State
from litestar.params import HeaderParameter
from sqlalchemy.orm import Session

from api.errors import Problem
from api.payments import WebhookProcessingFailed, handle_stripe_webhook, require_gateway


@post(
    "/v1/webhooks/stripe",
    sync_to_thread=True,
    status_code=200,
    tags=["payments"],
    security=[{}],  # no API key: the Stripe signature authenticates the call
    summary="Receive a Stripe event",
)
def stripe_webhook(
    state: State,
    body: bytes,
    db: Session,
    stripe_signature: Annotated[
        str | None, HeaderParameter(name="Stripe-Signature", required=False)
    ] = None,
) -> Response[dict[str, Any]]:
    """Verify, store and apply one Stripe event (answers 2xx once it is safely stored)."""
    gateway = require_gateway(state.payments)
    try:
        ack = handle_stripe_webhook(db, gateway, body, stripe_signature)
    except WebhookProcessingFailed as exc:
        raise Problem(
            "webhook_processing_failed",
            f"event {exc.event_id} could not be processed and is stored for retry;"
            " nothing of its effect was kept",
            instance="/v1/webhooks/stripe",
        ) from exc
    return Response(
        {
            "received": True,
            "event_id": ack.event_id,
            "type": ack.event_type,
            "status": ack.result.status,
            "outcome": ack.result.outcome,
        },
        status_code=200,
    )
