"""``/v1/failed-request-policies``: how failed requests are billed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, Request, get
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import requires
from api.idempotency import idempotent_post
from api.routes.catalog._common import CATALOG_ID, Treatment
from api.schemas import IdempotencyKey, Limit, Page
from plans import catalog


class PolicyRules(BaseModel):
    """What happens to each kind of failed request.

    Omitted kinds take the default policy's value (provider_error and empty_completion not billed,
    the rest billed).
    """

    model_config = ConfigDict(extra="forbid")
    provider_error: Treatment | None = None
    provider_truncation: Treatment | None = None
    refusal: Treatment | None = None
    client_disconnect: Treatment | None = None
    empty_completion: Treatment | None = None


class PolicyIn(BaseModel):
    """A failed-request policy; posting an existing id creates its next version."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(
        min_length=1, max_length=128, examples=["lenient"], json_schema_extra=CATALOG_ID
    )
    rules: PolicyRules = PolicyRules()


class PolicyOut(BaseModel):
    """A failed-request policy version with every rule resolved; ``builtin``: the default."""

    id: str
    version: int
    builtin: bool
    rules: dict[str, Treatment]
    created_at: datetime | None


def _policy_out(p: catalog.FailedRequestPolicy) -> PolicyOut:
    return PolicyOut(
        id=p.id,
        version=p.version,
        builtin=p is catalog.DEFAULT_FAILED_REQUEST_POLICY,
        rules=dict(p.rules),
        created_at=p.created_at,
    )


class FailedRequestPoliciesController(Controller):
    """Failed-request policies (admin). ``default`` is built in."""

    path = "/v1/failed-request-policies"
    tags = ["catalog"]
    guards = [requires()]

    @idempotent_post()
    def create_policy(
        self,
        request: Request[Any, Any, Any],
        data: PolicyIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> PolicyOut:
        """Create a policy, or the next version of an existing id."""
        return _policy_out(
            catalog.create_failed_request_policy(
                db, id=data.id, rules=data.rules.model_dump(exclude_none=True)
            )
        )

    @get("/", sync_to_thread=True)
    def list_policies(
        self, db: Session, limit: Limit = 20, starting_after: str | None = None
    ) -> Page[PolicyOut]:
        """Stored policies by id, latest version each (``default`` is built in, not listed)."""
        page = catalog.list_failed_request_policies(db, limit=limit, starting_after=starting_after)
        return Page[PolicyOut](data=[_policy_out(p) for p in page.items], has_more=page.has_more)

    @get("/{policy_id:str}", sync_to_thread=True)
    def get_policy(self, policy_id: str, db: Session) -> PolicyOut:
        """A policy's latest version (``default``: the built-in policy)."""
        return _policy_out(catalog.get_failed_request_policy(db, policy_id))

    @get("/{policy_id:str}/versions", sync_to_thread=True)
    def list_versions(self, policy_id: str, db: Session) -> Page[PolicyOut]:
        """Every version of a policy, oldest first."""
        versions = catalog.list_failed_request_policy_versions(db, policy_id)
        return Page[PolicyOut](data=[_policy_out(p) for p in versions], has_more=False)
