"""API keys: create (the only time a key is shown), list and revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, get
from litestar.params import Parameter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import Principal, create_key, keys_query, requires, revoke_key
from api.idempotency import idempotent_post
from api.models import ApiKey
from api.paging import keyset
from api.schemas import IdempotencyKey, Page

Role = Literal["admin", "finance", "gateway", "reseller", "customer"]


class ApiKeyIn(BaseModel):
    """A new API key's role and, for reseller and customer keys, the account it acts for."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"properties": {"role": {"enum": ["admin", "finance", "gateway"]}}},
                {
                    "required": ["account_id"],
                    "properties": {
                        "role": {"enum": ["reseller", "customer"]},
                        "account_id": {"type": "string"},
                    },
                },
            ]
        },
    )
    role: Role
    account_id: str | None = Field(default=None, min_length=1, max_length=64)
    description: str = Field(default="", max_length=200)


class ApiKeyCreated(BaseModel):
    """The new key. ``key`` is shown in this response only; an idempotent replay returns null."""

    id: str
    role: Role
    account_id: str | None
    key: str | None


class ApiKeyOut(BaseModel):
    """A stored key, without its secret."""

    id: str
    role: Role
    account_id: str | None
    prefix: str
    description: str
    created_at: datetime
    revoked_at: datetime | None


class KeyRevoked(BaseModel):
    """A revoked key."""

    id: str
    status: Literal["revoked"]


class ApiKeysController(Controller):
    """API keys (admin only). Handlers that share a path live in one controller."""

    path = "/v1/api-keys"
    tags = ["api keys"]
    guards = [requires()]

    @idempotent_post(stored_view=lambda created: created.model_copy(update={"key": None}))
    def create_api_key(
        self,
        request: Request[Any, Any, Any],
        data: ApiKeyIn,
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> ApiKeyCreated:
        """Create an API key (admin). The response is the only time the key is shown."""
        new = create_key(
            db,
            role=data.role,
            account_id=data.account_id,
            description=data.description,
            created_by=principal.key_id,
        )
        return ApiKeyCreated(id=new.id, role=data.role, account_id=new.account_id, key=new.secret)

    @get("/", sync_to_thread=True)
    def list_api_keys(
        self,
        db: Session,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
        starting_after: str | None = None,
    ) -> Page[ApiKeyOut]:
        """List keys (admin), oldest first, without secrets."""
        rows = db.scalars(keyset(keys_query(), ApiKey.id, starting_after, limit)).all()
        return Page[ApiKeyOut].of(
            rows,
            limit,
            lambda r: ApiKeyOut(
                id=r.id,
                role=r.role,
                account_id=r.account_id,
                prefix=r.prefix,
                description=r.description,
                created_at=r.created_at,
                revoked_at=r.revoked_at,
            ),
        )

    @idempotent_post("/{key_id:str}/revoke", status_code=200)
    def revoke_api_key(
        self,
        request: Request[Any, Any, Any],
        key_id: str,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> KeyRevoked:
        """Revoke a key (admin). Repeating it is harmless."""
        revoke_key(db, key_id)
        return KeyRevoked(id=key_id, status="revoked")
