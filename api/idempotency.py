"""The ``Idempotency-Key`` mechanism for POST requests.

The key is claimed (inserted) in the same transaction as the request's effects and its response,
so a repeat with the same key and body replays the first response, a concurrent repeat waits for
the first to commit and then replays it, a failed request leaves the key unused, and the same key
with a different body is refused with 409 ``idempotency_conflict``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from litestar import Request, Response
from pydantic import BaseModel
from sqlalchemy import text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from api.audit import record_request
from api.auth import principal_of
from api.db import commit
from api.models import IdempotencyRecord
from ledger.errors import DomainError, IdempotencyConflict

MAX_KEY_LENGTH = 255
REPLAY_HEADER = "Idempotent-Replayed"


class InvalidIdempotencyKey(DomainError):
    """An Idempotency-Key that is empty or too long."""

    code = "invalid_idempotency_key"


def _fingerprint(method: str, path: str, body: Any) -> str:
    if isinstance(body, BaseModel):
        body = body.model_dump(mode="json")
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def _encode(result: BaseModel | dict[str, Any] | list[Any]) -> bytes:
    if isinstance(result, BaseModel):
        return result.model_dump_json().encode()
    return json.dumps(result, default=str).encode()


def _audit(
    session: Session, request: Request[Any, Any, Any], principal: Any, body: Any, result: Any
) -> None:
    """Record the request of an admin or finance key: its body and the id it made or changed."""
    target = getattr(result, "id", None) if not isinstance(result, dict) else result.get("id")
    if isinstance(body, BaseModel):
        body = body.model_dump(mode="json", exclude_unset=True)
    record_request(
        session,
        request,
        principal,
        target_id=str(target) if target is not None else None,
        changes={"request": body if body is not None else {}},
    )


def purge_expired(session: Session, *, older_than: datetime, limit: int = 50_000) -> int:
    """Forget up to ``limit`` Idempotency-Key records created before ``older_than`` (a repeat
    after that runs as a new request). Returns how many were removed."""
    result = session.execute(
        text(
            "DELETE FROM idempotency_records WHERE (principal, key) IN ("
            " SELECT principal, key FROM idempotency_records WHERE created_at < :before"
            " ORDER BY created_at LIMIT :limit FOR UPDATE SKIP LOCKED)"
        ),
        {"before": older_than, "limit": limit},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def run_idempotent(
    session: Session,
    request: Request[Any, Any, Any],
    key: str | None,
    *,
    body: Any,
    status_code: int,
    produce: Callable[[], BaseModel | dict[str, Any] | list[Any]],
    stored_view: Callable[[Any], BaseModel | dict[str, Any] | list[Any]] | None = None,
    audit: bool = True,
) -> Response[bytes]:
    """Run ``produce`` at most once per (caller, key) and commit its effects with its response.

    Args:
        session: the request's session; committed here on success.
        request: the request: its caller (keys are scoped to the API key that sent them), method
            and path (fingerprinted with the body).
        key: the ``Idempotency-Key`` header, or None to run without replay protection.
        body: the parsed request body.
        status_code: the status of a successful response.
        produce: does the work and returns the response model.
        stored_view: what to keep for replays when the response holds a secret that must not be
            stored (a new API key): replays then return this redacted view.
        audit: record an admin's or finance's request in the audit log (api/audit.py), in the
            same transaction; False when ``produce`` records a more precise event itself.
    """
    principal = principal_of(request)
    method, path = request.method, request.url.path
    if key is None:
        result = produce()
        content = _encode(result)
        if audit:
            _audit(session, request, principal, body, result)
        commit(session)
        return Response(content, status_code=status_code, media_type="application/json")
    if not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise InvalidIdempotencyKey(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters; got {len(key)}"
        )
    fingerprint = _fingerprint(method, path, body)
    claimed = session.execute(
        insert(IdempotencyRecord)
        .values(
            principal=principal.key_id,
            key=key,
            method=method,
            path=path,
            request_hash=fingerprint,
            status_code=0,
            response_body=b"",
        )
        .on_conflict_do_nothing(index_elements=["principal", "key"])
        .returning(IdempotencyRecord.key)
    ).first()
    if claimed is None:
        stored = session.get(IdempotencyRecord, (principal.key_id, key), populate_existing=True)
        assert stored is not None  # the conflicting row is committed, or we would have waited
        session.rollback()
        if stored.request_hash != fingerprint:
            raise IdempotencyConflict(
                f"Idempotency-Key {key!r} was already used with a different request"
                f" ({stored.method} {stored.path}); use a new key for a new request"
            )
        return Response(
            stored.response_body,
            status_code=stored.status_code,
            media_type="application/json",
            headers={REPLAY_HEADER: "true"},
        )
    result = produce()
    content = _encode(result)
    kept = _encode(stored_view(result)) if stored_view else content
    if audit:
        _audit(session, request, principal, body, result)
    session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.principal == principal.key_id, IdempotencyRecord.key == key)
        .values(status_code=status_code, response_body=kept)
    )
    commit(session)
    return Response(content, status_code=status_code, media_type="application/json")
