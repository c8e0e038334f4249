"""Keyset paging of list queries: ``starting_after`` the last id of the previous page."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select

S = TypeVar("S", bound=Select[*tuple[Any, ...]])


def keyset(stmt: S, id_column: Any, starting_after: str | int | None, limit: int) -> S:
    """Order ``stmt`` by ``id_column`` and keep one page of it, plus one row.

    Rows come after ``starting_after`` (None or an empty string: from the start); the one row
    more than ``limit`` lets :meth:`api.schemas.Page.of` tell whether there is more.
    """
    if starting_after is not None and starting_after != "":
        stmt = stmt.where(id_column > starting_after)
    return stmt.order_by(id_column).limit(limit + 1)
