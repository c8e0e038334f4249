"""Shared wire shapes: money as decimal strings, pages, and the caller's scope."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from litestar.params import HeaderParameter, Parameter
from pydantic import BaseModel, Field

from api.auth import Principal
from ledger.amounts import Amount
from wallet.accounts import EVERYTHING, Scope

T = TypeVar("T")

IdempotencyKey = Annotated[str | None, HeaderParameter(name="Idempotency-Key", required=False)]
Limit = Annotated[int, Parameter(ge=1, le=100, description="page size (1-100)")]
DecimalString = Annotated[
    str,
    Field(
        pattern=r"^-?[0-9]{1,15}(\.[0-9]{1,18})?$",
        max_length=35,
        examples=["12.50"],
        description="decimal string: ASCII digits, at most 15 before the point and 18 after",
    ),
]


class Money(BaseModel):
    """An exact amount: a decimal string and its ISO 4217 currency."""

    amount: str
    currency: str

    @classmethod
    def of(cls, value: Amount) -> Money:
        """Wire form of an Amount."""
        return cls(amount=value.format(), currency=value.unit.code)


class Page(BaseModel, Generic[T]):
    """A page of a list; pass the last id as ``starting_after`` for the next one."""

    data: list[T]
    has_more: bool


def scope_of(principal: Principal) -> Scope:
    """Which accounts a key may see: admin and finance all; a reseller its subtree; a customer
    its own account; a gateway the subtree it is bound to (or all when unbound)."""
    if principal.role in ("admin", "finance"):
        return EVERYTHING
    if principal.role == "customer":
        return Scope("self", principal.account_id)
    if principal.account_id is None:
        return EVERYTHING
    return Scope("subtree", principal.account_id)
