"""Public identifiers: a type prefix and a time-ordered, unguessable suffix."""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    """``acc_0187a3...``: sorts by creation time (for cursor pagination), 32 random bits."""
    return f"{prefix}_{time.time_ns():016x}{secrets.token_hex(4)}"
