"""Request-scoped dependencies: the database session and the caller."""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime
from typing import Any

from litestar import Request
from litestar.datastructures import State
from sqlalchemy.orm import Session

from api.auth import Principal, principal_of


def provide_db(state: State) -> Generator[Session, None, None]:
    """One session per request; handlers commit explicitly, anything uncommitted rolls back."""
    session: Session = state.sessionmaker()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The authenticated caller."""
    return principal_of(request)


def now_of(state: State) -> datetime | None:
    """The app's injected clock, if any (tests drive time through it); None means each service
    uses its own clock (the usage gate and the close use the database's)."""
    clock = state.get("clock")
    return clock() if clock is not None else None
