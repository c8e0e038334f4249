"""Shared wire shapes: money as decimal strings, pages, and the caller's scope."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, Self, TypeVar

from litestar.params import HeaderParameter, Parameter
from pydantic import BaseModel, Field

from api.auth import Principal
from ledger.amounts import Amount
from ledger.units import Unit
from wallet.accounts import EVERYTHING, Scope

T = TypeVar("T")

#: What the documents state for decimal strings that a domain parser checks (its error names the
#: field and the rule); the server accepts exactly these and a few equivalent spellings.
PRICE_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,6})?$"
PCT_PATTERN = r"^(100(\.0{1,2})?|[0-9]{1,2}(\.[0-9]{1,2})?)$"
MARKUP_PATTERN = r"^[0-9]{1,7}(\.[0-9]{1,2})?$"
#: Money in a currency's minor units (2 decimals for most, 0 for JPY, 3 for KWD...): the
#: currency decides how many decimals are allowed (422 ``invalid_amount`` beyond them).
MONEY_PATTERN = r"^[0-9]{1,15}(\.[0-9]{1,3})?$"

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        description="replays the first response of a POST sent again with the same key and body",
        schema_extra={
            "minLength": 1,
            "maxLength": 255,
            "pattern": r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        },
    ),
]
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

NonNegativeDecimalString = Annotated[
    str,
    Field(
        pattern=r"^[0-9]{1,15}(\.[0-9]{1,18})?$",
        max_length=34,
        examples=["12.50"],
        description="decimal string, not negative: ASCII digits, at most 15 before the point"
        " and 18 after",
    ),
]
#: What a positive amount (a top-up, a grant, a refund) is documented as; the domain refuses 0.
POSITIVE_DECIMAL: dict[str, Any] = {
    "pattern": r"^([1-9][0-9]{0,14}(\.[0-9]{1,18})?|0\.[0-9]{0,17}[1-9])$"
}


class Money(BaseModel):
    """An exact amount: a decimal string and its ISO 4217 currency."""

    amount: str
    currency: str

    @classmethod
    def of(cls, value: Amount) -> Money:
        """Wire form of an Amount."""
        return cls(amount=value.format(), currency=value.unit.code)

    @classmethod
    def atoms(cls, atoms: int, unit: Unit) -> Money:
        """Wire form of ``atoms`` minor units of ``unit`` (cents of USD, yen of JPY...)."""
        return cls.of(Amount(atoms, unit))


class Page(BaseModel, Generic[T]):
    """A page of a list; pass the last id as ``starting_after`` for the next one."""

    data: list[T]
    has_more: bool

    @classmethod
    def of(cls, rows: Sequence[Any], limit: int, out: Callable[[Any], T]) -> Self:
        """The page of ``rows`` fetched with one row more than ``limit``.

        The first ``limit`` rows go through ``out``; the extra row (see :func:`api.paging.keyset`)
        only says there is more.

        Args:
            rows: the rows fetched, at most ``limit + 1``.
            limit: the page size asked for.
            out: turns a row into its response model.
        """
        return cls(data=[out(row) for row in rows[:limit]], has_more=len(rows) > limit)


def scope_of(principal: Principal) -> Scope:
    """Which accounts a key may see.

    Admin and finance all; a reseller its subtree; a customer its own account; a gateway the subtree
    it is bound to (or all when unbound).
    """
    if principal.role in ("admin", "finance"):
        return EVERYTHING
    if principal.role == "customer":
        return Scope("self", principal.account_id)
    if principal.account_id is None:
        return EVERYTHING
    return Scope("subtree", principal.account_id)
