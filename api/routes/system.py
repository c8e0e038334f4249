"""Health check (public) and metrics."""

from __future__ import annotations

import time
from typing import Any, Literal

import sqlalchemy as sa
from litestar import Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from pydantic import BaseModel


class HealthOut(BaseModel):
    """Whether the server can reach its database."""

    status: Literal["ok", "unavailable"]
    database: Literal["up", "down"]
    database_latency_ms: int | None = None
    detail: str | None = None


@get(
    "/health",
    sync_to_thread=True,
    exclude_from_auth=True,
    tags=["system"],
    responses={
        200: ResponseSpec(HealthOut, description="The database answers"),
        503: ResponseSpec(HealthOut, description="The database does not answer"),
    },
)
def health(state: State) -> Response[dict[str, Any]]:
    """200 when the database answers, 503 otherwise (with the reason)."""
    started = time.perf_counter()
    try:
        with state.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        return Response(
            {"status": "unavailable", "database": "down", "detail": type(exc).__name__},
            status_code=503,
        )
    elapsed_ms = int((time.perf_counter() - started) * 1000)
    return Response({"status": "ok", "database": "up", "database_latency_ms": elapsed_ms})
