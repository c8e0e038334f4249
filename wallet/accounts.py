"""Wallet accounts: creation, lookup within a caller's scope, settings, and the wallet's lock.

Lock order (every path that changes a wallet takes what it needs in this order):

1. on the gateway path only, advisory locks: the usage gate of each billing tree charged
   (``wallet/gate.py``, shared; the month-end close takes it exclusively) and the catalog lock of
   each currency (shared), then the usage ids claimed, in id order (``wallet/snapshot.py``);
2. the ``wallet_accounts`` rows involved, with the resellers of sub-accounts, in id order,
   ``FOR NO KEY UPDATE`` (:func:`lock_accounts`, :func:`get_account` with ``lock=True``);
3. the row the operation is about: authorizations in id order (gateway), a top-up
   (:func:`wallet.topups.lock_topup`), a credit freeze;
4. credit lots in id order ``FOR UPDATE``, taken by the services outside the gateway (refunds,
   freezes, purchases, lot expiry); the gateway path reads lots and quota windows without row
   locks, since they change only under their account's row lock;
5. ledger accounts in id order (:func:`ledger.journal.post_entries`; the posting trigger locks
   in id order too).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol, TypeVar

from sqlalchemy import Select, select, text
from sqlalchemy.orm import Session

from ledger.amounts import Amount, exact_decimal
from ledger.base import in_array
from ledger.errors import NotFound
from ledger.ids import new_id
from ledger.units import Unit
from ledger.units import currency as currency_unit
from plans.catalog import get_failed_request_policy
from plans.price_context import check_standing_discounts
from wallet.burn_order import validate_burn_order
from wallet.errors import AccountClosed, AccountNotEmpty, Conflict, InvalidRequest
from wallet.ledger_accounts import customer_ledger
from wallet.models import Account


class Placed(Protocol):
    """An account's place in the tree: its id and its reseller."""

    @property
    def id(self) -> str:
        """The account's id."""
        ...

    @property
    def parent_id(self) -> str | None:
        """The reseller's account id, or None for a top-level account."""
        ...


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
    """Lock wallet accounts (``FOR NO KEY UPDATE``) in id order, and their resellers if asked.

    The resellers are locked too when ``with_parents``. This is the first row lock of every path
    that changes a wallet (the whole lock order is in this module's docstring). Unknown ids are
    left out.
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


class _Owned(Protocol):
    """A row that belongs to one wallet account (a top-up, a credit freeze)."""

    @property
    def account_id(self) -> str:
        """The owning account's id."""
        ...


_OwnedRow = TypeVar("_OwnedRow", bound=_Owned)


def lock_owned(session: Session, model: type[_OwnedRow], row_id: str, what: str) -> _OwnedRow:
    """Lock a row's account row (the wallet's first lock), then the row, and return it read fresh.

    Raises:
        NotFound: no such row (``what`` names its kind in the message).
    """
    seen = session.get(model, row_id)
    if seen is None:
        raise NotFound(f"{what} {row_id} does not exist")
    get_account(session, seen.account_id, lock=True)
    locked = session.get(model, row_id, with_for_update=True, populate_existing=True)
    assert locked is not None  # rows that belong to an account are never deleted
    return locked


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


def _check_name(name: str) -> str:
    """The name without surrounding blanks.

    Raises:
        InvalidRequest: empty.
    """
    if not name.strip():
        raise InvalidRequest("name must not be empty")
    return name.strip()


def _non_negative(value: str, unit: Unit, what: str) -> Amount:
    """A money setting, parsed.

    Raises:
        InvalidRequest: negative.
    """
    amount = Amount.parse(value, unit)
    if amount.atoms < 0:
        raise InvalidRequest(f"{what} must not be negative")
    return amount


def _check_parent(parent: Account, unit: Unit, kind: str) -> None:
    """A sub-account's parent is a top-level reseller of the same currency.

    Raises:
        InvalidRequest: it is not, or the sub-account would be a reseller itself.
    """
    if parent.kind != "reseller":
        raise InvalidRequest(
            f"parent {parent.id} is not a reseller; only resellers have sub-accounts"
        )
    if parent.parent_id is not None:
        raise InvalidRequest("sub-accounts cannot have sub-accounts of their own")
    if parent.currency != unit.code:
        raise InvalidRequest(
            f"a sub-account uses its reseller's currency {parent.currency}, not {unit.code}"
        )
    if kind == "reseller":
        raise InvalidRequest("a reseller's sub-account cannot be a reseller")


def _check_external_id(session: Session, external_id: str, parent_id: str | None) -> None:
    """An external id names one account under the same parent.

    Raises:
        Conflict: already used.
    """
    clash = session.scalar(
        select(Account.id).where(
            Account.external_id == external_id,
            Account.parent_id.is_not_distinct_from(parent_id),
        )
    )
    if clash:
        raise Conflict(f"external_id {external_id!r} is already used by account {clash}")


def _check_policy(session: Session, policy_id: str, default_hint: str) -> None:
    """The failed-request policy exists.

    Raises:
        InvalidRequest: it does not (``default_hint`` says how to get the default one).
    """
    try:
        get_failed_request_policy(session, policy_id)
    except NotFound:
        raise InvalidRequest(
            f"failed_request_policy {policy_id!r} does not exist; create it with"
            f" POST /v1/failed-request-policies{default_hint}"
        ) from None


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
    clean_name = _check_name(name)
    limit = _non_negative(credit_limit, unit, "credit_limit")
    threshold = (
        _non_negative(low_balance_threshold, unit, "low_balance_threshold")
        if low_balance_threshold
        else None
    )
    if parent_id is not None:
        _check_parent(get_account(session, parent_id, scope=scope), unit, kind)
    elif scope.kind != "all":
        raise NotFound("resellers create sub-accounts under their own account (parent_id)")
    if external_id is not None:
        _check_external_id(session, external_id, parent_id)
    if failed_request_policy_id is not None:
        _check_policy(session, failed_request_policy_id, " or omit it for the default")
    parsed_discounts = _parse_discounts(discounts or [])
    check_standing_discounts(session, unit, "new account", parsed_discounts)
    account = Account(
        id=new_id("acc"),
        name=clean_name,
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


#: what an account's status may become: suspension is reversible, closing is final
STATUSES = ("active", "suspended", "closed")

#: what must be zero in an account's own ledger accounts before it can be closed
_CLOSE_CHECK = text(
    """
    SELECT 'ledger' AS what, code AS detail,
           debits_posted - credits_posted AS posted, debits_pending - credits_pending AS pending
    FROM ledger_accounts
    WHERE owner_id = :a
      AND code IN ('customer:prepaid', 'customer:bonus', 'customer:package_tokens',
                   'receivable:unbilled', 'receivable:invoiced', 'receivable:reversals')
      AND (debits_posted <> credits_posted OR debits_pending <> 0 OR credits_pending <> 0)
    UNION ALL
    SELECT 'authorizations', NULL, count(*), 0 FROM wallet_authorizations
    WHERE (account_id = :a OR reseller_account_id = :a) AND status = 'approved'
    HAVING count(*) > 0
    UNION ALL
    SELECT 'freezes', NULL, count(*), 0 FROM wallet_credit_freezes
    WHERE account_id = :a AND status = 'frozen' HAVING count(*) > 0
    UNION ALL
    SELECT 'subscription', id, 0, 0 FROM wallet_subscriptions
    WHERE account_id = :a AND status <> 'canceled'
    UNION ALL
    SELECT 'sub_accounts', NULL, count(*), 0 FROM wallet_accounts
    WHERE parent_id = :a AND status <> 'closed' HAVING count(*) > 0
    """
)

_LEDGER_WORDS = {
    "customer:prepaid": "paid credit",
    "customer:bonus": "bonus credit",
    "customer:package_tokens": "package tokens",
    "receivable:unbilled": "overage not invoiced yet",
    "receivable:invoiced": "unpaid invoices",
    "receivable:reversals": "debts from refunds or disputes",
}


def what_remains(session: Session, account: Account) -> list[str]:
    """What keeps an account from being closed, in words (empty: it can be closed).

    Money, tokens or debts in its ledger accounts, open authorizations (its own, or reserving its
    float for a sub-account), frozen credit, a live subscription, open sub-accounts.
    """
    out: list[str] = []
    for row in session.execute(_CLOSE_CHECK, {"a": account.id}):
        if row.what == "ledger":
            out.append(_LEDGER_WORDS.get(row.detail, row.detail))
        elif row.what == "authorizations":
            out.append(f"{row.posted} open authorization(s) (void them or let them expire)")
        elif row.what == "freezes":
            out.append(f"{row.posted} credit freeze(s) of open disputes")
        elif row.what == "subscription":
            out.append(f"live subscription {row.detail} (cancel it and let it end)")
        else:
            out.append(f"{row.posted} sub-account(s) not closed")
    return out


def _check_transition(session: Session, account: Account, status: str) -> None:
    if status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
    if status == "closed":
        remains = what_remains(session, account)
        if remains:
            raise AccountNotEmpty(
                f"account {account.id} cannot be closed while it has: {'; '.join(remains)}."
                " Refund or spend the credit, collect what is owed, then close it"
                " (suspend it meanwhile to stop usage)",
                remaining=remains,
            )


def _money(atoms: int | None, unit: Unit) -> str | None:
    return None if atoms is None else Amount(atoms, unit).format()


def update_account(
    session: Session,
    account_id: str,
    changes: Mapping[str, Any],
    *,
    scope: Scope = EVERYTHING,
) -> tuple[Account, dict[str, dict[str, Any]]]:
    """Change an account's settings under its row lock.

    The gateway path reads them under the same lock, so a batch sees the old or the new settings,
    never half of them.

    ``changes`` holds only the fields to change: ``name``, ``credit_limit`` (decimal string),
    ``failed_request_policy_id`` (None: the default policy), ``discounts``, ``burn_order``
    (None: the default order), ``low_balance_threshold`` (decimal string or None) and
    ``status`` (``active``, ``suspended`` or ``closed``).

    Returns the account and what changed, ``{field: {"before": ..., "after": ...}}`` in wire
    form (money as decimal strings); a field set to its current value is not listed.

    Raises:
        NotFound: no such account in the caller's scope.
        AccountClosed: the account is closed (closing is final).
        AccountNotEmpty: closing an account that still holds money, tokens, debts or open
            authorizations.
        InvalidRequest: a value that is not valid (the account is left as it was).
    """
    account = get_account(session, account_id, scope=scope, lock=True)
    if account.status == "closed":
        raise AccountClosed(f"account {account.id} is closed; a closed account cannot change")
    new = _new_settings(session, account, changes)
    diff = _apply(account, new)
    session.flush()
    return account, diff


def _new_settings(session: Session, account: Account, changes: Mapping[str, Any]) -> dict[str, Any]:
    """The settings ``changes`` asks for, checked and in stored form.

    Raises:
        AccountNotEmpty: closing an account that still holds something.
        InvalidRequest: a value that is not valid.
    """
    unit = currency_unit(account.currency)
    new: dict[str, Any] = {}
    if "name" in changes:
        new["name"] = _check_name(str(changes["name"] or ""))
    if "credit_limit" in changes:
        new["credit_limit"] = _non_negative(
            str(changes["credit_limit"]), unit, "credit_limit"
        ).atoms
    if "failed_request_policy_id" in changes:
        policy_id = changes["failed_request_policy_id"]
        if policy_id is not None:
            _check_policy(session, policy_id, ", or send null for the default policy")
        new["failed_request_policy_id"] = policy_id
    if "discounts" in changes:
        parsed = _parse_discounts(list(changes["discounts"] or []))
        check_standing_discounts(session, unit, account.id, parsed)
        new["discounts"] = parsed
    if "burn_order" in changes:
        order = changes["burn_order"]
        new["burn_order"] = list(validate_burn_order(order)) if order is not None else None
    if "low_balance_threshold" in changes:
        raw = changes["low_balance_threshold"]
        threshold = (
            _non_negative(str(raw), unit, "low_balance_threshold") if raw is not None else None
        )
        new["low_balance_threshold"] = threshold.atoms if threshold is not None else None
    if "status" in changes and changes["status"] != account.status:
        _check_transition(session, account, str(changes["status"]))
        new["status"] = changes["status"]
    return new


def _apply(account: Account, new: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Set the settings that change.

    Returns ``{field: {"before": ..., "after": ...}}`` in wire form (money as decimal strings).
    """
    unit = currency_unit(account.currency)
    money = {"credit_limit", "low_balance_threshold"}
    diff: dict[str, dict[str, Any]] = {}
    for field, value in new.items():
        before = getattr(account, field)
        if before == value:
            continue
        if field in money:
            diff[field] = {"before": _money(before, unit), "after": _money(value, unit)}
        else:
            diff[field] = {"before": before, "after": value}
        setattr(account, field, value)
    return diff


def require_open(session: Session, account_id: str, *, scope: Scope = EVERYTHING) -> Account:
    """The account, unless it is closed (money cannot go into a closed account).

    Raises:
        NotFound: no such account in the caller's scope.
        AccountClosed: it is closed.
    """
    account = get_account(session, account_id, scope=scope)
    if account.status == "closed":
        raise AccountClosed(
            f"account {account.id} is closed; nothing can be bought or paid into it"
        )
    return account


def accounts_query(scope: Scope, *, parent_id: str | None = None) -> Select[Account]:
    """The accounts ``scope`` sees, as a query to page by id.

    Args:
        scope: the caller's scope.
        parent_id: only the sub-accounts of this account (None or empty: all).
    """
    stmt = select(Account)
    if scope.kind == "self":
        stmt = stmt.where(Account.id == scope.root_id)
    elif scope.kind == "subtree":
        stmt = stmt.where((Account.id == scope.root_id) | (Account.parent_id == scope.root_id))
    if parent_id:
        stmt = stmt.where(Account.parent_id == parent_id)
    return stmt


def account_rows(
    model: Any,
    account_id: str,
    *,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    **equal: object,
) -> Select[Any]:
    """The rows of ``model`` that belong to one account, as a query to page by id.

    Args:
        model: a mapped class with ``account_id`` and ``created_at`` (top-ups, subscriptions,
            card payments...).
        account_id: the account.
        created_from: only rows created at or after this instant (None: from the start).
        created_to: only rows created before this instant (None: to now).
        **equal: column values the rows must have; an empty or None value filters nothing.
    """
    stmt = select(model).where(model.account_id == account_id)
    if created_from is not None:
        stmt = stmt.where(model.created_at >= created_from)
    if created_to is not None:
        stmt = stmt.where(model.created_at < created_to)
    for column, value in equal.items():
        if value:
            stmt = stmt.where(getattr(model, column) == value)
    return stmt
