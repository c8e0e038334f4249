"""``/v1/plans``: coding plans (subscriptions with usage windows)."""

from __future__ import annotations

from typing import Any, Literal

from litestar import Controller, Request, get
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import requires
from api.idempotency import idempotent_post
from api.routes.catalog._common import CATALOG_ID, MODEL_IDS, READERS
from api.routes.catalog.prices import money_str
from api.schemas import MONEY_PATTERN, IdempotencyKey, Limit, Page
from plans import catalog


class PlanWindow(BaseModel):
    """A quota window: at most ``limit`` requests or tokens per window."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["rolling_5h", "weekly", "monthly"]
    unit: Literal["requests", "tokens"]
    limit: int = Field(strict=True, ge=1, le=10**15, examples=[100])


class PlanIn(BaseModel):
    """A coding plan."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=128, examples=["coder"], json_schema_extra=CATALOG_ID)
    name: str = Field(min_length=1, max_length=200)
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    monthly_fee: str = Field(
        examples=["20.00"],
        description="decimal string, whole minor units",
        json_schema_extra={"pattern": MONEY_PATTERN},
    )
    models: list[str] = Field(default=[], max_length=1000, json_schema_extra=MODEL_IDS)
    windows: list[PlanWindow] = Field(max_length=6, json_schema_extra={"minItems": 1})
    on_exhausted: Literal["block", "wallet"]


class PlanOut(BaseModel):
    """A coding plan."""

    id: str
    name: str
    currency: str
    monthly_fee: str
    models: list[str]
    windows: list[PlanWindow]
    on_exhausted: str


def _plan_out(p: catalog.PlanSpec) -> PlanOut:
    return PlanOut(
        id=p.id,
        name=p.name,
        currency=p.currency.code,
        monthly_fee=money_str(p.monthly_fee),
        models=list(p.models),
        windows=[PlanWindow.model_validate(w, from_attributes=True) for w in p.windows],
        on_exhausted=p.on_exhausted,
    )


class PlansController(Controller):
    """Coding plans (admin)."""

    path = "/v1/plans"
    tags = ["catalog"]

    @idempotent_post(guards=[requires()])
    def create_plan(
        self,
        request: Request[Any, Any, Any],
        data: PlanIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> PlanOut:
        """Add a coding plan; 409 ``conflict`` if the id exists."""
        return _plan_out(
            catalog.create_plan(
                db,
                id=data.id,
                name=data.name,
                currency=data.currency,
                monthly_fee=data.monthly_fee,
                models=data.models,
                windows=[w.model_dump() for w in data.windows],
                on_exhausted=data.on_exhausted,
            )
        )

    @get("/", sync_to_thread=True, guards=[requires(*READERS)])
    def list_plans(
        self, db: Session, limit: Limit = 20, starting_after: str | None = None
    ) -> Page[PlanOut]:
        """Coding plans by id."""
        page = catalog.list_plans(db, limit=limit, starting_after=starting_after)
        return Page[PlanOut](data=[_plan_out(p) for p in page.items], has_more=page.has_more)

    @get("/{plan_id:str}", sync_to_thread=True, guards=[requires(*READERS)])
    def get_plan(self, plan_id: str, db: Session) -> PlanOut:
        """One coding plan."""
        return _plan_out(catalog.get_plan(db, plan_id))


# -- top-up bonus rules -------------------------------------------------------------------
