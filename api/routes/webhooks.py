"""Outgoing webhook endpoints (the signing secret is shown once)."""

from __future__ import annotations

from datetime import datetime

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.idempotency import run_idempotent
from api.schemas import IdempotencyKey, Page, scope_of
from wallet.accounts import get_account
from wallet.models import WebhookEndpoint
from wallet.outbox import add_endpoint


class EndpointIn(BaseModel):
    """Where to deliver events: an account's own (and its sub-accounts') or, for admins without
    ``account_id``, every account's."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=8, max_length=2000)
    account_id: str | None = None


class EndpointOut(BaseModel):
    """A webhook endpoint. ``secret`` (whsec_...) verifies signatures; shown on creation only."""

    id: str
    url: str
    account_id: str | None
    enabled: bool
    created_at: datetime
    secret: str | None = None


class WebhookEndpointsController(Controller):
    """``/v1/webhook-endpoints``: events are signed with the Standard Webhooks scheme."""

    path = "/v1/webhook-endpoints"
    tags = ["webhooks"]
    guards = [requires("reseller", "customer")]

    @post("/", sync_to_thread=True, status_code=201)
    def create(
        self,
        request: Request[Principal, Principal, State],
        data: EndpointIn,
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        """Register an endpoint."""
        account_id = data.account_id if principal.role == "admin" else principal.account_id
        if account_id is not None:
            get_account(db, account_id, scope=scope_of(principal))

        def produce() -> EndpointOut:
            ep = add_endpoint(db, url=data.url, account_id=account_id)
            return EndpointOut(
                id=ep.id,
                url=ep.url,
                account_id=ep.account_id,
                enabled=ep.enabled,
                created_at=ep.created_at,
                secret=ep.secret,
            )

        return run_idempotent(
            db,
            request,
            idempotency_key,
            body=data,
            status_code=201,
            produce=produce,
            stored_view=lambda out: out.model_copy(update={"secret": None}),
        )

    @get("/", sync_to_thread=True)
    def list_endpoints(self, db: Session, principal: Principal) -> Page[EndpointOut]:
        """The caller's endpoints (admins: all)."""
        stmt = select(WebhookEndpoint).order_by(WebhookEndpoint.id)
        if principal.role != "admin":
            stmt = stmt.where(WebhookEndpoint.account_id == principal.account_id)
        rows = db.scalars(stmt.limit(100)).all()
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
