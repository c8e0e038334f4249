"""Decimal text forms shared by every layer (pure)."""

from __future__ import annotations

from decimal import Decimal
from typing import overload


@overload
def format_pct(value: Decimal) -> str: ...
@overload
def format_pct(value: None) -> None: ...
def format_pct(value: Decimal | None) -> str | None:
    """A percentage (or any ratio) as plain digits without padding zeros.

    ``12.50`` -> ``"12.5"``, ``1E+2`` -> ``"100"``, ``None`` -> ``None``.
    """
    return None if value is None else format(value.normalize(), "f")
