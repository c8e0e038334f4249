"""Shared pieces of the catalog routes.

Who reads what, price and percent strings, the reseller a write acts for.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field
from sqlalchemy.orm import Session

from api.auth import Principal
from api.schemas import PRICE_PATTERN, scope_of
from ledger.errors import NotFound
from plans._db import ID_RE
from wallet.accounts import get_account
from wallet.errors import InvalidRequest

Treatment = Literal["billed", "not_billed", "output_not_billed"]
#: who may read the catalog they buy from: models, token packages, coding plans
READERS = ("finance", "reseller", "customer", "gateway")
#: list rate cards are the wholesale basis of resellers: not shown to customers, who read
#: their own effective prices (``GET /v1/accounts/{id}/prices``, ``/v1/price-quotes``)
CARD_READERS = ("finance", "reseller")
PCT_DESC = "decimal string, percent (0..100, at most 2 decimals)"


#: Operator-chosen catalog ids, as ``plans._db.check_id`` accepts them.
CATALOG_ID: dict[str, Any] = {"pattern": ID_RE.pattern}


#: Lists of model ids (``plans._db`` refuses empty ones).
MODEL_IDS: dict[str, Any] = {"items": {"type": "string", "minLength": 1}}


def price_field(*, optional: bool = False) -> Any:
    """The ``Field`` of a per-Mtok price: a decimal string, required unless ``optional``."""
    # Decimal strings are checked by plans.prices.parse_price, whose messages name the field
    # and the rule (negative, too many decimals...); JSON numbers are refused here.
    desc = "decimal string per million tokens, at most 6 decimals"
    doc: dict[str, Any] = {"pattern": PRICE_PATTERN}
    if optional:
        return Field(default=None, examples=["0.30"], description=desc, json_schema_extra=doc)
    return Field(examples=["3.00"], description=desc, json_schema_extra=doc)


def price_str(value: Decimal) -> str:
    """A price as a plain decimal string with at least two decimals (``3`` -> ``"3.00"``)."""
    text = format(value, "f")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def pct_str(value: Decimal) -> str:
    """A percentage as a plain decimal string (``50``, ``12.5``)."""
    return format(value, "f")


def reseller_of(db: Session, principal: Principal, account_id: str | None) -> str | None:
    """The reseller account a bonus rule or retail price book belongs to.

    A reseller key acts only for its own account (another id looks unknown: 404); an admin
    names any reseller, checked to exist and to be a reseller.

    Raises:
        NotFound: the account does not exist or is not visible to the key.
        InvalidRequest: the account is not a reseller.
    """
    if principal.role == "reseller":
        if account_id not in (None, principal.account_id):
            raise NotFound(f"account {account_id} does not exist")
        account_id = principal.account_id
    if account_id is None:
        return None
    account = get_account(db, account_id, scope=scope_of(principal))
    if account.kind != "reseller" or account.parent_id is not None:
        raise InvalidRequest(
            f"account {account_id} is not a reseller; only resellers have their own bonus rules"
            " and retail prices for sub-accounts"
        )
    return account.id


def acting_reseller(field: str) -> Callable[[Any, Session, Principal], None]:
    """The ``check=`` of a write owned by a reseller: refuses an owner the key does not act for.

    Args:
        field: the body's field that names the owning reseller account.
    """

    def check(data: Any, db: Session, principal: Principal) -> None:
        reseller_of(db, principal, getattr(data, field))

    return check


def owner_filter(db: Session, principal: Principal, account_id: str | None) -> str | None:
    """The owner a list of reseller-owned versions is filtered by: a reseller key's own account.

    Args:
        db: the request's session.
        principal: the caller.
        account_id: the owner asked for (None: any).
    """
    if principal.role == "reseller":
        return reseller_of(db, principal, account_id)
    return account_id


def hide_others(principal: Principal, owner_id: str | None, what: str) -> None:
    """Refuse a reseller key a version that another account owns, as if it did not exist.

    Args:
        principal: the caller.
        owner_id: the version's owner.
        what: the version, named as in the error (``reseller price book pb_1``).

    Raises:
        NotFound: a reseller key and someone else's version.
    """
    if principal.role == "reseller" and owner_id != principal.account_id:
        raise NotFound(f"{what} does not exist")
