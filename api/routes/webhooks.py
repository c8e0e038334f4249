"""Outgoing webhook endpoints (the signing secret is shown once) and their deliveries.

What was sent where, the dead letters, and replaying them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.params import Parameter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.idempotency import idempotent_post
from api.paging import keyset
from api.schemas import IdempotencyKey, Page, scope_of
from wallet.accounts import get_account
from wallet.models import OutboxEvent, WebhookDelivery, WebhookEndpoint
from wallet.outbox import add_endpoint, deliveries_query, endpoints_of, replay_delivery

#: Delivery ids are BIGINT; no id reaches this bound (larger numbers made PostgreSQL fail)
MAX_BIGINT = 10**18


class EndpointIn(BaseModel):
    """Where to deliver events.

    An account's own (and its sub-accounts') or, for admins without ``account_id``, every account's.
    """

    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        min_length=8,
        max_length=2000,
        json_schema_extra={"pattern": r"^https?://[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"},
    )
    account_id: str | None = None


class EndpointOut(BaseModel):
    """A webhook endpoint. ``secret`` (whsec_...) verifies signatures; shown on creation only."""

    id: str
    url: str
    account_id: str | None
    enabled: bool
    created_at: datetime
    secret: str | None = None


def _owner(data: EndpointIn, principal: Principal) -> str | None:
    """The account an endpoint is registered for: an admin names it, others own it."""
    return data.account_id if principal.role == "admin" else principal.account_id


def _visible_owner(data: EndpointIn, db: Session, principal: Principal) -> None:
    """Refuse an endpoint for an account the key cannot see (404)."""
    account_id = _owner(data, principal)
    if account_id is not None:
        get_account(db, account_id, scope=scope_of(principal))


class WebhookEndpointsController(Controller):
    """``/v1/webhook-endpoints``: events are signed with the Standard Webhooks scheme."""

    path = "/v1/webhook-endpoints"
    tags = ["webhooks"]
    guards = [requires("reseller", "customer")]

    @idempotent_post(
        stored_view=lambda out: out.model_copy(update={"secret": None}), check=_visible_owner
    )
    def create(
        self,
        request: Request[Principal, Principal, State],
        data: EndpointIn,
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> EndpointOut:
        """Register an endpoint."""
        ep = add_endpoint(db, url=data.url, account_id=_owner(data, principal))
        return EndpointOut(
            id=ep.id,
            url=ep.url,
            account_id=ep.account_id,
            enabled=ep.enabled,
            created_at=ep.created_at,
            secret=ep.secret,
        )

    @get("/", sync_to_thread=True)
    def list_endpoints(self, db: Session, principal: Principal) -> Page[EndpointOut]:
        """The caller's endpoints (admins: all)."""
        rows = endpoints_of(db, principal.account_id, every_account=principal.role == "admin")
        return Page[EndpointOut](
            data=[
                EndpointOut(
                    id=e.id,
                    url=e.url,
                    account_id=e.account_id,
                    enabled=e.enabled,
                    created_at=e.created_at,
                )
                for e in rows
            ],
            has_more=False,
        )


class DeliveryOut(BaseModel):
    """One event to one endpoint.

    ``pending`` (retried with backoff until ``next_attempt_at``), ``delivered`` (never sent to that
    endpoint again) or ``dead`` (every attempt failed; replay it with ``POST
    /v1/webhook-deliveries/{id}/replay``).
    """

    id: int
    event_id: str
    event_type: str
    endpoint_id: str
    url: str
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    replays: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None
    dead_at: datetime | None


def delivery_out(d: WebhookDelivery, event: OutboxEvent, ep: WebhookEndpoint) -> DeliveryOut:
    """Wire form of a delivery."""
    return DeliveryOut(
        id=d.id,
        event_id=d.event_id,
        event_type=event.type,
        endpoint_id=d.endpoint_id,
        url=ep.url,
        status=d.status,
        attempts=d.attempts,
        replays=d.replays,
        next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
        last_attempt_at=d.last_attempt_at,
        last_status=d.last_status,
        last_error=d.last_error,
        delivered_at=d.delivered_at,
        dead_at=d.dead_at,
    )


class WebhookDeliveriesController(Controller):
    """``/v1/webhook-deliveries``: what was sent to which endpoint; dead letters and replay."""

    path = "/v1/webhook-deliveries"
    tags = ["webhooks"]
    guards = [requires("reseller", "customer")]

    @get("/", sync_to_thread=True)
    def list_deliveries(
        self,
        db: Session,
        principal: Principal,
        status: Literal["pending", "delivered", "dead"] | None = None,
        endpoint_id: Annotated[str | None, Parameter(max_length=100)] = None,
        starting_after: Annotated[
            int | None,
            Parameter(ge=0, le=MAX_BIGINT, schema_extra={"minimum": 0, "maximum": MAX_BIGINT}),
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 50,
    ) -> Page[DeliveryOut]:
        """Deliveries to the caller's endpoints (admins: all), oldest first.

        ``status=dead`` lists the dead letters.
        """
        stmt = deliveries_query(
            principal.account_id,
            every_account=principal.role == "admin",
            status=status,
            endpoint_id=endpoint_id,
        )
        rows = db.execute(keyset(stmt, WebhookDelivery.id, starting_after, limit)).all()
        return Page[DeliveryOut].of(rows, limit, lambda row: delivery_out(*row))

    @idempotent_post("/{delivery_id:int}/replay", status_code=200)
    def replay(
        self,
        request: Request[Principal, Principal, State],
        delivery_id: Annotated[int, Parameter(ge=1, le=MAX_BIGINT)],
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> DeliveryOut:
        """Send a dead delivery again.

        It is pending again, due now, with fresh attempts (409 ``conflict`` unless it is dead).
        """
        owner = None if principal.role == "admin" else principal.account_id
        d = replay_delivery(db, delivery_id, account_id=owner or "")
        return delivery_out(
            d, db.get_one(OutboxEvent, d.event_id), db.get_one(WebhookEndpoint, d.endpoint_id)
        )
