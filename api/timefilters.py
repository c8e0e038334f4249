"""Filters of history lists: instants must carry an offset; integer cursors fit a BIGINT."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar.params import Parameter

from ledger.errors import DomainError
from wallet.errors import InvalidRequest

MAX_CURSOR = 2**63 - 1
#: ``starting_after`` of lists keyed by a BIGINT id (stated in the document, checked first)
IntCursor = Annotated[
    int | None,
    Parameter(
        ge=0,
        le=MAX_CURSOR,
        schema_extra={"minimum": 0, "maximum": MAX_CURSOR},
        description="the last id of the previous page",
    ),
]


class UnknownCursor(DomainError):
    """A ``starting_after`` that names nothing in the list (well-formed, but not found)."""

    code = "unknown_cursor"


def aware(name: str, value: datetime | None) -> datetime | None:
    """``value`` if it is None or carries a UTC offset.

    Raises:
        InvalidRequest: an instant without an offset (ambiguous).
    """
    if value is not None and value.utcoffset() is None:
        raise InvalidRequest(
            f"{name} needs a UTC offset, e.g. 2026-11-01T00:00:00Z or 2026-11-01T00:00:00+08:00"
        )
    return value
