"""The ``Idempotency-Key`` mechanism for POST requests.

The key is claimed (inserted) in the same transaction as the request's effects and its response,
so a repeat with the same key and body replays the first response, a concurrent repeat waits for
the first to commit and then replays it, a failed request leaves the key unused, and the same key
with a different body is refused with 409 ``idempotency_conflict``.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from litestar import Request, Response, patch, post
from litestar.handlers import HTTPRouteHandler
from pydantic import BaseModel
from sqlalchemy import text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from api.audit import record_request
from api.auth import principal_of
from api.db import commit
from api.models import IdempotencyRecord
from api.openapi import returns
from ledger.errors import DomainError, IdempotencyConflict

MAX_KEY_LENGTH = 255
REPLAY_HEADER = "Idempotent-Replayed"


class InvalidIdempotencyKey(DomainError):
    """An Idempotency-Key that is empty or too long."""

    code = "invalid_idempotency_key"


Result = BaseModel | dict[str, Any] | list[Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """A handler's result answered with another status than its route's.

    A card payment that only started answers 202 where the route's wallet payment answers 201;
    replays of the key answer the same status.
    """

    body: Result
    status_code: int


def _fingerprint(method: str, path: str, body: Any) -> str:
    if isinstance(body, BaseModel):
        body = body.model_dump(mode="json")
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def _encode(result: Result) -> bytes:
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
    """Forget up to ``limit`` Idempotency-Key records created before ``older_than``.

    A repeat after that runs as a new request. Returns how many were removed.
    """
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
    produce: Callable[[], Result | Reply],
    stored_view: Callable[[Any], Result] | None = None,
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
        produce: does the work and returns the response model (in a :class:`Reply` to answer
            another status than ``status_code``).
        stored_view: what to keep for replays when the response holds a secret that must not be
            stored (a new API key): replays then return this redacted view.
        audit: record an admin's or finance's request in the audit log (api/audit.py), in the
            same transaction; False when ``produce`` records a more precise event itself.

    Raises:
        InvalidIdempotencyKey: the key is blank or longer than :data:`MAX_KEY_LENGTH`.
        IdempotencyConflict: the key was used with another request.
    """
    principal = principal_of(request)
    if key is not None:
        if not key.strip() or len(key) > MAX_KEY_LENGTH:
            raise InvalidIdempotencyKey(
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters; got {len(key)}"
            )
        fingerprint = _fingerprint(request.method, request.url.path, body)
        if not _claim(session, request, principal.key_id, key, fingerprint):
            return _replay(session, principal.key_id, key, fingerprint)
    produced = produce()
    result = produced.body if isinstance(produced, Reply) else produced
    status_code = produced.status_code if isinstance(produced, Reply) else status_code
    content = _encode(result)
    if audit:
        _audit(session, request, principal, body, result)
    if key is not None:
        kept = _encode(stored_view(result)) if stored_view else content
        session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.principal == principal.key_id, IdempotencyRecord.key == key)
            .values(status_code=status_code, response_body=kept)
        )
    commit(session)
    return Response(content, status_code=status_code, media_type="application/json")


def _claim(
    session: Session, request: Request[Any, Any, Any], principal: str, key: str, fingerprint: str
) -> bool:
    """Insert the key's record, empty until the response is stored.

    False if it exists (a concurrent first request holding it is waited for).
    """
    claimed = session.execute(
        insert(IdempotencyRecord)
        .values(
            principal=principal,
            key=key,
            method=request.method,
            path=request.url.path,
            request_hash=fingerprint,
            status_code=0,
            response_body=b"",
        )
        .on_conflict_do_nothing(index_elements=["principal", "key"])
        .returning(IdempotencyRecord.key)
    ).first()
    return claimed is not None


def _replay(session: Session, principal: str, key: str, fingerprint: str) -> Response[bytes]:
    """The stored response of the key's first request, if this one is the same request.

    Raises:
        IdempotencyConflict: the key was used with another method, path or body.
    """
    stored = session.get(IdempotencyRecord, (principal, key), populate_existing=True)
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


#: the parameters an idempotent handler declares (``data`` too when the request has a body)
_NEEDED = ("request", "db", "idempotency_key")


def _result_model(fn: Callable[..., Any]) -> Any:
    """The model ``fn`` is annotated to return (a string under postponed annotations)."""
    annotation = fn.__annotations__["return"]
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(sys.modules[fn.__module__]))  # noqa: S307
    return annotation


def _idempotent(
    route: type[HTTPRouteHandler],
    path: str,
    *,
    status_code: int,
    stored_view: Callable[[Any], Result] | None,
    audit: bool,
    responses: dict[int, Any] | None,
    check: Callable[..., None] | None,
    kwargs: dict[str, Any],
) -> Callable[[Callable[..., Result | Reply]], HTTPRouteHandler]:
    def decorate(fn: Callable[..., Result | Reply]) -> HTTPRouteHandler:
        declared = inspect.signature(fn).parameters
        checked = list(inspect.signature(check).parameters) if check else []
        missing = [name for name in (*_NEEDED, *checked) if name not in declared]
        if missing:
            raise TypeError(f"{fn.__qualname__} must declare {', '.join(missing)}")

        @functools.wraps(fn)
        def handler(*args: Any, **params: Any) -> Response[bytes]:
            if check is not None:
                check(**{name: params[name] for name in checked})
            return run_idempotent(
                params["db"],
                params["request"],
                params["idempotency_key"],
                body=params.get("data"),
                status_code=status_code,
                produce=lambda: fn(*args, **params),
                stored_view=stored_view,
                audit=audit,
            )

        # Litestar reads the parameters through __wrapped__ and the return type from here
        handler.__annotations__ = {**fn.__annotations__, "return": Response[bytes]}
        documented = responses or returns(_result_model(fn), status_code)
        return route(
            path, sync_to_thread=True, status_code=status_code, responses=documented, **kwargs
        )(handler)

    return decorate


def idempotent_post(
    path: str = "/",
    *,
    status_code: int = 201,
    stored_view: Callable[[Any], Result] | None = None,
    audit: bool = True,
    responses: dict[int, Any] | None = None,
    check: Callable[..., None] | None = None,
    **kwargs: Any,
) -> Callable[[Callable[..., Result | Reply]], HTTPRouteHandler]:
    """``@post`` for a write that runs once per ``Idempotency-Key`` (see :func:`run_idempotent`).

    The handler does the work and returns its result model (in a :class:`Reply` to answer
    another status); it declares ``request``, ``db`` and ``idempotency_key`` (and ``data`` for
    a body). The method and path of the key's fingerprint are the request's, the status is this
    route's, and the documented response is the handler's return annotation unless
    ``responses`` says otherwise.

    Args:
        path: the route's path.
        status_code: the status of a successful response (and of its replays).
        stored_view: what replays return when the response holds a secret.
        audit: record an admin's or finance's request in the audit log.
        responses: the documented responses, when not simply the returned model.
        check: refusals that come before the key is looked at (a replay is checked again):
            called with the handler's arguments it names; it raises or returns None.
        **kwargs: anything else ``@post`` takes (guards, opt, ...).
    """
    return _idempotent(
        post,
        path,
        status_code=status_code,
        stored_view=stored_view,
        audit=audit,
        responses=responses,
        check=check,
        kwargs=kwargs,
    )


def idempotent_patch(
    path: str,
    *,
    audit: bool = True,
    responses: dict[int, Any] | None = None,
    **kwargs: Any,
) -> Callable[[Callable[..., Result | Reply]], HTTPRouteHandler]:
    """``@patch`` answering 200 through the Idempotency-Key mechanism, like ``idempotent_post``."""
    return _idempotent(
        patch,
        path,
        status_code=200,
        stored_view=None,
        audit=audit,
        responses=responses,
        check=None,
        kwargs=kwargs,
    )
