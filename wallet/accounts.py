"""Wallet accounts: creation, lookup within a caller's scope, settings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.amounts import Amount, exact_decimal
from ledger.base import in_array
from ledger.errors import NotFound
from ledger.units import currency as currency_unit
from plans.catalog import get_failed_request_policy
from plans.pricing import check_standing_discounts
from wallet.burn import validate_burn_order
from wallet.chart import customer_ledger
from wallet.errors import Conflict, InvalidRequest
from wallet.ids import new_id
from wallet.models import Account


class Placed(Protocol):
    """An account's place in the tree: its id and its reseller."""

    @property
    def id(self) -> str: ...
    @property
    def parent_id(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Scope:
    """Which accounts a caller may see: all, one account and its sub-accounts, or one account.

    Anything outside the scope is reported as not found, so ids do not leak.
    """

    kind: Literal["all", "subtree", "self"]
    root_id: str | None = None

    def allows(self, account: Placed) -> bool:
        """True when the caller may see ``account``."""
        if self.kind == "all":
            return True
        if self.kind == "self":
            return account.id == self.root_id
        return account.id == self.root_id or account.parent_id == self.root_id


EVERYTHING = Scope("all")


def get_account(
    session: Session, account_id: str, *, scope: Scope = EVERYTHING, lock: bool = False
) -> Account:
    """Load an account the caller may see.

    Raises:
        NotFound: no such account, or outside the caller's scope.
    """
    stmt = select(Account).where(Account.id == account_id)
    if lock:
        stmt = stmt.with_for_update(key_share=True).execution_options(populate_existing=True)
    account = session.scalars(stmt).one_or_none()
    if account is None or not scope.allows(account):
        raise NotFound(f"account {account_id} does not exist")
    return account


def account_parents(session: Session, account_ids: Iterable[str]) -> dict[str, str | None]:
    """Each existing account's reseller (``None`` for a top-level account); no locks."""
    rows = session.execute(
        select(Account.id, Account.parent_id).where(in_array(Account.id, set(account_ids)))
    )
    return {row.id: row.parent_id for row in rows}


def lock_accounts(
    session: Session, account_ids: Iterable[str], *, with_parents: bool = True
) -> dict[str, Account]:
    """Lock wallet accounts (``FOR NO KEY UPDATE``) in id order, with their resellers when
    ``with_parents``: the first row lock of every path that changes a wallet (see
    ``wallet/burndown.py`` for the whole lock order). Unknown ids are left out.
    """
    ids = set(account_ids)
    if with_parents and ids:
        ids |= {p for p in account_parents(session, ids).values() if p is not None}
    if not ids:
        return {}
    rows = session.scalars(
        select(Account)
        .where(in_array(Account.id, sorted(ids)))
        .order_by(Account.id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).all()
    return {a.id: a for a in rows}


def _parse_discounts(discounts: list[dict[str, Any]]) -> list[dict[str, str | None]]:
    out: list[dict[str, str | None]] = []
    seen: set[str | None] = set()
    for d in discounts:
        model = d.get("model")
        try:
            pct = exact_decimal(d["pct"])
        except Exception:
            raise InvalidRequest(f"discount pct {d.get('pct')!r} is not a number") from None
        if not (Decimal(0) <= pct <= Decimal(100)) or pct != pct.quantize(Decimal("0.01")):
            raise InvalidRequest(f"discount pct must be 0..100 with at most 2 decimals; got {pct}")
        if model in seen:
            raise InvalidRequest(f"two discounts for {model or 'all models'}")
        seen.add(model)
        out.append({"model": model, "pct": str(pct)})
    return out


def create_account(
    session: Session,
    *,
    name: str,
    currency: str,
    kind: Literal["customer", "reseller"] = "customer",
    parent_id: str | None = None,
    external_id: str | None = None,
    credit_limit: str = "0",
    failed_request_policy_id: str | None = None,
    discounts: list[dict[str, Any]] | None = None,
    burn_order: list[str] | None = None,
    low_balance_threshold: str | None = None,
    scope: Scope = EVERYTHING,
) -> Account:
    """Create a customer or reseller account (a reseller's sub-account when ``parent_id``).

    Raises:
        InvalidRequest: bad currency, negative credit limit, a parent that is not a reseller or
            has another currency, a sub-account that is itself a reseller.
        NotFound: the parent is not visible to the caller.
        Conflict: ``external_id`` already used under the same parent.
    """
    unit = currency_unit(currency)
    if not name.strip():
        raise InvalidRequest("name must not be empty")
    limit = Amount.parse(credit_limit, unit)
    if limit.atoms < 0:
        raise InvalidRequest("credit_limit must not be negative")
    threshold = Amount.parse(low_balance_threshold, unit) if low_balance_threshold else None
    if parent_id is not None:
        parent = get_account(session, parent_id, scope=scope)
        if parent.kind != "reseller":
            raise InvalidRequest(
                f"parent {parent_id} is not a reseller; only resellers have sub-accounts"
            )
        if parent.parent_id is not None:
            raise InvalidRequest("sub-accounts cannot have sub-accounts of their own")
        if parent.currency != unit.code:
            raise InvalidRequest(
                f"a sub-account uses its reseller's currency {parent.currency}, not {unit.code}"
            )
        if kind == "reseller":
            raise InvalidRequest("a reseller's sub-account cannot be a reseller")
    elif scope.kind != "all":
        raise NotFound("resellers create sub-accounts under their own account (parent_id)")
    if external_id is not None:
        clash = session.scalar(
            select(Account.id).where(
                Account.external_id == external_id,
                Account.parent_id.is_not_distinct_from(parent_id),
            )
        )
        if clash:
            raise Conflict(f"external_id {external_id!r} is already used by account {clash}")
    if failed_request_policy_id is not None:
        try:
            get_failed_request_policy(session, failed_request_policy_id)
        except NotFound:
            raise InvalidRequest(
                f"failed_request_policy {failed_request_policy_id!r} does not exist;"
                " create it with POST /v1/failed-request-policies or omit it for the default"
            ) from None
    parsed_discounts = _parse_discounts(discounts or [])
    check_standing_discounts(session, unit, "new account", parsed_discounts)
    account = Account(
        id=new_id("acc"),
        name=name.strip(),
        kind=kind,
        parent_id=parent_id,
        external_id=external_id,
        currency=unit.code,
        credit_limit=limit.atoms,
        failed_request_policy_id=failed_request_policy_id,
        discounts=parsed_discounts,
        burn_order=list(validate_burn_order(burn_order)) if burn_order else None,
        low_balance_threshold=threshold.atoms if threshold else None,
    )
    session.add(account)
    session.flush()
    customer_ledger(session, account)
    return account
