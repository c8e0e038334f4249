"""``/v1/audit-events``: the audit log of admin and finance actions (see api/audit.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, get
from litestar.params import QueryParameter
from pydantic import BaseModel
from sqlalchemy.orm import Session

from api.audit import events_query
from api.auth import requires
from api.models import AuditEvent
from api.paging import keyset
from api.schemas import Limit, Page
from api.timefilters import IntCursor, aware


class AuditEventOut(BaseModel):
    """One audited change."""

    id: int
    at: datetime
    actor: str
    actor_role: str | None
    action: str
    target_type: str | None
    target_id: str | None
    request_id: str | None
    changes: dict[str, Any]


class AuditEventsController(Controller):
    """``/v1/audit-events`` (admin, finance): oldest first, keyset paged by ``id``."""

    path = "/v1/audit-events"
    tags = ["operations"]
    guards = [requires("finance")]

    @get("/", sync_to_thread=True)
    def list_events(
        self,
        db: Session,
        limit: Limit = 20,
        starting_after: IntCursor = None,
        actor: str | None = None,
        action: str | None = None,
        target_id: str | None = None,
        from_: Annotated[datetime | None, QueryParameter(name="from")] = None,
        to: datetime | None = None,
    ) -> Page[AuditEventOut]:
        """Audit events filtered by actor, action, target id, and time.

        Key id, ``cli``, ``scheduler``. Exact, or a prefix ending in ``*``: ``account.*``. ``from``
        inclusive, ``to`` exclusive; RFC 3339 with offset.
        """
        stmt = events_query(
            actor=actor,
            action=action,
            target_id=target_id,
            since=aware("from", from_),
            until=aware("to", to),
        )
        rows = db.scalars(keyset(stmt, AuditEvent.id, starting_after, limit)).all()
        return Page[AuditEventOut].of(
            rows, limit, lambda r: AuditEventOut.model_validate(r, from_attributes=True)
        )
