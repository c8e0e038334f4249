"""The audit log of admin and finance actions: who changed what, when.

Every write an admin or finance key makes through :func:`api.idempotency.run_idempotent` (every
POST) is recorded in the same transaction as the change: the route, the target (the id the
answer names, else the path), and the request body (request bodies carry no secrets: keys and
signing secrets are made by the server and never stored here). Edits record ``before`` and
``after`` of each field they changed instead. The CLI records what it changes as ``cli``, the
scheduler its ledger audits as ``scheduler``. A request that fails or is replayed writes
nothing (nothing changed). Read it at ``GET /v1/audit-events`` (admin, finance).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from litestar import Request
from sqlalchemy import Select, insert, select
from sqlalchemy.orm import Session

from api.accesslog import request_id_of
from api.auth import Principal
from api.models import AuditEvent

#: roles whose writes are audited
AUDITED_ROLES = frozenset({"admin", "finance"})


def record_event(
    session: Session,
    *,
    actor: str,
    actor_role: str | None,
    action: str,
    target_type: str | None = None,
    target_id: str | None = None,
    changes: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> None:
    """Append an event in the caller's transaction (it commits or rolls back with the change)."""
    session.execute(
        insert(AuditEvent).values(
            actor=actor,
            actor_role=actor_role,
            action=action,
            target_type=target_type,
            target_id=target_id,
            request_id=request_id,
            changes=storable(changes or {}),
        )
    )


#: what PostgreSQL's jsonb cannot hold: NUL and unpaired surrogates (both become U+FFFD)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _text(value: str) -> str:
    return _UNSTORABLE.sub("\ufffd", value)


def storable(value: Any) -> Any:
    """``value`` with every string (keys too) made storable in a jsonb column.

    A usage batch may carry a record with a NUL (that record is rejected alone; the audit keeps the
    rest).
    """
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


def record_request(
    session: Session,
    request: Request[Any, Any, Any],
    principal: Principal,
    *,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    changes: dict[str, Any],
) -> None:
    """Record an action of an admin or finance key (others are not audited).

    ``action`` defaults to the method and route (``POST /v1/accounts/{account_id}/topups``), the
    target to the request path.
    """
    if principal.role not in AUDITED_ROLES:
        return
    route = request.scope.get("path_template") or request.url.path
    record_event(
        session,
        actor=principal.key_id,
        actor_role=principal.role,
        action=action or f"{request.method} {route}",
        target_type=target_type,
        target_id=target_id if target_id is not None else request.url.path,
        changes=changes,
        request_id=request_id_of(request.scope),
    )


def run_ledger_audit(session: Session, *, actor: str) -> list[str]:
    """Check the ledger and wallet invariants from the raw rows and record the result.

    The ``ledger.audit`` event (how many violations, the first 50) is written in the caller's
    transaction. Returns the violations (empty: clean).
    """
    from ledger.audit import find_violations
    from wallet.audit import find_violations as wallet_violations

    problems = [str(p) for p in find_violations(session) + wallet_violations(session)]
    record_event(
        session,
        actor=actor,
        actor_role=None,
        action="ledger.audit",
        changes={"violations": len(problems), "problems": problems[:50]},
    )
    return problems


def events_query(
    *,
    actor: str | None = None,
    action: str | None = None,
    target_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select[AuditEvent]:
    """Audit events, filtered, as a query to page by id.

    Args:
        actor: only this actor's (a key id, ``cli``, ``scheduler``; None or empty: any).
        action: only this action, or with a final ``*`` the actions it prefixes.
        target_id: only events about this id.
        since: only events at or after this instant.
        until: only events before this instant.
    """
    stmt = select(AuditEvent)
    if actor:
        stmt = stmt.where(AuditEvent.actor == actor)
    if action:
        if action.endswith("*"):
            stmt = stmt.where(AuditEvent.action.startswith(action[:-1], autoescape=True))
        else:
            stmt = stmt.where(AuditEvent.action == action)
    if target_id:
        stmt = stmt.where(AuditEvent.target_id == target_id)
    if since is not None:
        stmt = stmt.where(AuditEvent.at >= since)
    if until is not None:
        stmt = stmt.where(AuditEvent.at < until)
    return stmt
