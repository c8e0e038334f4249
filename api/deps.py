"""Request-scoped dependencies: the database session and the caller."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any

from litestar import Request
from litestar.datastructures import State
from sqlalchemy.orm import Session

from api.auth import Principal, principal_of


async def provide_db(state: State) -> AsyncGenerator[Session, None]:
    """One session per request; handlers commit explicitly, anything uncommitted rolls back.

    An async generator on purpose: Litestar runs the cleanup of a *sync* generator dependency
    in its worker threads, and with every thread busy in a handler waiting for a pooled
    connection that only such a cleanup gives back, requests deadlocked until the pool timed
    out (32 concurrent reads did). Here the cleanup runs on the event loop: releasing the
    connection costs no I/O after a commit, one short ROLLBACK otherwise.
    """
    session: Session = state.sessionmaker()
    try:
        yield session
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
