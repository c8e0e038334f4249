"""Date-range filters of history lists: instants must carry an offset."""

from __future__ import annotations

from datetime import datetime

from wallet.errors import InvalidRequest


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
