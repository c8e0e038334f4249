"""``/v1/models``: the models rate cards can price."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, Request, get
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import requires
from api.idempotency import idempotent_post
from api.routes.catalog._common import CATALOG_ID, READERS
from api.schemas import IdempotencyKey, Limit, Page
from plans import catalog


class CatalogModelIn(BaseModel):
    """A model that rate cards can price."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(
        min_length=1, max_length=128, examples=["claude-sonnet-4"], json_schema_extra=CATALOG_ID
    )
    provider: str = Field(min_length=1, max_length=100, examples=["anthropic"])
    display_name: str = Field(min_length=1, max_length=200, examples=["Claude Sonnet 4"])


class CatalogModelOut(BaseModel):
    """A model in the catalog."""

    id: str
    provider: str
    display_name: str
    created_at: datetime


def _model_out(m: catalog.ModelInfo) -> CatalogModelOut:
    return CatalogModelOut(
        id=m.id, provider=m.provider, display_name=m.display_name, created_at=m.created_at
    )


class ModelsController(Controller):
    """Models (admin). Ids may contain ``/`` (``anthropic/claude-sonnet-4``)."""

    path = "/v1/models"
    tags = ["catalog"]

    @idempotent_post(guards=[requires()])
    def create_model(
        self,
        request: Request[Any, Any, Any],
        data: CatalogModelIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> CatalogModelOut:
        """Add a model; 409 ``conflict`` if the id exists."""
        return _model_out(
            catalog.create_model(
                db, id=data.id, provider=data.provider, display_name=data.display_name
            )
        )

    @get("/", sync_to_thread=True, guards=[requires(*READERS)])
    def list_models(
        self, db: Session, limit: Limit = 20, starting_after: str | None = None
    ) -> Page[CatalogModelOut]:
        """Models by id."""
        page = catalog.list_models(db, limit=limit, starting_after=starting_after)
        return Page[CatalogModelOut](
            data=[_model_out(m) for m in page.items], has_more=page.has_more
        )

    @get("/{model_id:path}", sync_to_thread=True, guards=[requires(*READERS)])
    def get_model(self, model_id: str, db: Session) -> CatalogModelOut:
        """One model."""
        return _model_out(catalog.get_model(db, model_id.lstrip("/")))


# -- rate cards ---------------------------------------------------------------------------
