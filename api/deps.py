"""Request-scoped dependencies: the database session and the caller."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any

from litestar import Request
from litestar.datastructures import State
from sqlalchemy.orm import Session

from api.auth import Principal, principal_of
from api.db import commit

#: methods that only read: what their handlers leave in a transaction rolls back
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def provide_db(
    state: State, request: Request[Any, Any, Any]
) -> AsyncGenerator[Session, None]:
    """One session per request, committed when a writing handler returns, else rolled back.

    Litestar runs this cleanup after the handler returned and its response was built, but
    before the response is sent; an exception of the handler (or of building its response) is
    thrown in at the ``yield``. So a write request (not GET, HEAD or OPTIONS) whose handler
    returned commits what its transaction still holds, through :func:`api.db.commit` (a lost
    COMMIT answers 503 ``commit_unknown`` instead of the built response), and an exception
    rolls everything back. Handlers answer errors by raising (a domain error or an
    :class:`api.errors.Problem`), so no error answer commits. Reads never commit: a GET leaves
    only reads behind. Handlers that commit themselves (the Idempotency-Key mechanism does,
    with the stored response) leave no transaction, and nothing happens here.

    An async generator on purpose: Litestar runs the cleanup of a *sync* generator dependency
    in its worker threads, and with every thread busy in a handler waiting for a pooled
    connection that only such a cleanup gives back, requests deadlocked until the pool timed
    out (32 concurrent reads did). Here the cleanup runs on the event loop: releasing the
    connection costs no I/O after a commit, one short ROLLBACK (or the COMMIT of a handler that
    left its writes to it) otherwise. It must stay the only generator dependency of a route:
    Litestar cleans up several at once in a task group, which would wrap the 503 of a lost
    COMMIT in an exception group (a 500).

    Args:
        state: the app's state (its sessionmaker).
        request: the request (its method).

    Yields:
        The request's session.
    """
    session: Session = state.sessionmaker()
    try:
        yield session
        if request.method not in SAFE_METHODS and session.in_transaction():
            commit(session)
    finally:
        session.close()


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The authenticated caller."""
    return principal_of(request)


def now_of(state: State) -> datetime | None:
    """The app's injected clock, if any (tests drive time through it).

    None means each service uses its own clock (the usage gate and the close use the database's).
    """
    clock = state.get("clock")
    return clock() if clock is not None else None
