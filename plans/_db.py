"""Helpers shared by the catalog services (private).

Ids, paging, input checks, conflicts and the storing of a new version (a head row and its
child rows).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ledger.errors import NotFound, UnknownUnit
from ledger.ids import new_id as new_id  # re-exported: the catalog modules import it from here
from ledger.units import Unit
from ledger.units import currency as currency_unit
from plans._exact import is_aware
from plans.catalog_errors import CatalogConflict
from plans.errors import InvalidCatalog, UnknownModel
from plans.models import CatalogModel

T = TypeVar("T")
R = TypeVar("R")

#: Catalog ids chosen by the operator (models, packages, plans, policies).
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+/-]{0,127}$")
#: Most items one list call returns.
MAX_PAGE = 100


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list, oldest id first; pass the last id as ``starting_after``."""

    items: tuple[T, ...]
    has_more: bool


def clean_decimal(value: Decimal) -> Decimal:
    """A stored NUMERIC without its padding zeros (``3.000000000000`` -> ``3``)."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


def check_id(value: object, *, what: str) -> str:
    """An operator-chosen id: 1-128 characters, letters, digits and ``._:@+/-``.

    Raises:
        InvalidCatalog: anything else.
    """
    if not isinstance(value, str) or not ID_RE.match(value):
        raise InvalidCatalog(
            f"{what} must be 1-128 characters of letters, digits and . _ : @ + / -, "
            f"starting with a letter or digit; got {value!r}",
            field=what,
        )
    return value


def check_text(value: object, *, what: str, max_length: int = 200) -> str:
    """A non-blank display string of at most ``max_length`` characters."""
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise InvalidCatalog(
            f"{what} must be a non-empty string of at most {max_length} characters", field=what
        )
    return value


def check_int(value: object, *, what: str, minimum: int, hint: str = "") -> int:
    """An integer (not a bool) of at least ``minimum``; ``hint`` explains the bound."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidCatalog(f"{what} must be an integer, got {value!r}", field=what)
    if value < minimum:
        raise InvalidCatalog(
            f"{what} must be at least {minimum}, got {value}{hint}", field=what, minimum=minimum
        )
    return value


def check_aware(value: object, *, what: str) -> datetime:
    """A timezone-aware datetime."""
    if not isinstance(value, datetime) or not is_aware(value):
        raise InvalidCatalog(
            f"{what} must be a timestamp with a UTC offset, e.g. 2026-01-01T00:00:00Z",
            field=what,
        )
    return value


def money_unit(currency: Unit | str) -> Unit:
    """The currency unit for a code or unit.

    Raises:
        UnknownUnit: an unknown code, or a unit that is not money (TOKENS, REQUESTS).
    """
    if isinstance(currency, Unit):
        if not currency.is_currency:
            raise UnknownUnit(f"{currency.code} is not a currency")
        return currency
    if not isinstance(currency, str):
        raise UnknownUnit(f"currency must be an ISO 4217 code such as USD, got {currency!r}")
    return currency_unit(currency)


def check_models(
    session: Session, models: Iterable[object], *, what: str, allow_repeats: bool = False
) -> tuple[str, ...]:
    """The given model ids, each of which must exist in ``catalog_models``.

    Raises:
        InvalidCatalog: a malformed id, or one listed twice (unless ``allow_repeats``).
        UnknownModel: an id that is not in the catalog.
    """
    ids: list[str] = []
    for model in models:
        if not isinstance(model, str) or not model:
            raise InvalidCatalog(f"{what}: model ids must be non-empty strings", field=what)
        if model in ids and not allow_repeats:
            raise InvalidCatalog(f"{what} lists model {model!r} twice", field=what, model=model)
        ids.append(model)
    wanted = set(ids)
    if wanted:
        found = set(session.scalars(select(CatalogModel.id).where(CatalogModel.id.in_(wanted))))
        missing = sorted(wanted - found)
        if missing:
            raise UnknownModel(
                f"{what}: model(s) {', '.join(missing)} are not in the catalog; "
                "create them with POST /v1/models first",
                field=what,
                models=missing,
            )
    return tuple(ids)


def page_limit(limit: int) -> int:
    """Clamp a page size to 1..100."""
    return max(1, min(int(limit), MAX_PAGE))


def list_rows(
    session: Session,
    table: Any,
    convert: Callable[[list[Any]], Iterable[T]],
    *,
    where: Iterable[tuple[Any, object]] = (),
    limit: int,
    starting_after: str | None,
) -> Page[T]:
    """One page of ``table``'s rows by id, each ``(column, value)`` of ``where`` a filter.

    A filter whose value is ``None`` is left out (the caller did not ask for it).

    Args:
        session: the caller's session (read only).
        table: the mapped class listed; its ``id`` orders the list.
        convert: the rows of the page as values.
        where: ``(column, value)`` pairs the rows must equal.
        limit: the page size (clamped to 1..100).
        starting_after: the last id of the previous page, or ``None`` for the first.
    """
    limit = page_limit(limit)
    stmt = select(table).order_by(table.id).limit(limit + 1)
    for column, value in where:
        if value is not None:
            stmt = stmt.where(column == value)
    if starting_after:
        stmt = stmt.where(table.id > starting_after)
    rows = list(session.scalars(stmt))
    return Page(tuple(convert(rows[:limit])), len(rows) > limit)


def rows_by_parent(
    session: Session, parent: Any, parents: Iterable[Any], *order_by: Any
) -> dict[str, list[Any]]:
    """The child rows of each parent row, by the parent's id, in one query.

    Args:
        session: the caller's session (read only).
        parent: the child table's column that holds the parent's id.
        parents: the parent rows (each has an ``id``).
        *order_by: the children's order within a parent (none given: as the database returns
            them).
    """
    out: dict[str, list[Any]] = {row.id: [] for row in parents}
    if out:
        query = select(parent.class_).where(parent.in_(out))
        if order_by:
            query = query.order_by(parent, *order_by)
        for child in session.scalars(query):
            out[getattr(child, parent.key)].append(child)
    return out


def version_at(session: Session, table: Any, at: datetime, *where: Any) -> Any:
    """The row of a version series in force at ``at``: the greatest ``effective_from <= at``.

    Args:
        session: the caller's session (read only).
        table: the mapped class of the versions (it has ``effective_from``).
        at: the instant.
        *where: the conditions that pick the series (its currency, its owner...).
    """
    return session.scalars(
        select(table)
        .where(*where, table.effective_from <= at)
        .order_by(table.effective_from.desc())
        .limit(1)
    ).first()


def found(row: R | None, what: str, **extra: object) -> R:
    """``row``, unless it is ``None``: then ``what`` (``"rate card rc_1"``) does not exist.

    Raises:
        NotFound: ``row`` is ``None``.
    """
    if row is None:
        raise NotFound(f"{what} does not exist", **extra)
    return row


@contextmanager
def conflict_as(session: Session, message: str, **extra: object) -> Iterator[None]:
    """Run inserts (and their flush) in a savepoint; a unique violation becomes a 409.

    The explicit existence checks in the services give the clear message in the normal case;
    this catches the race where two requests create the same object at once.

    Raises:
        CatalogConflict: a unique or primary key was violated.
    """
    try:
        with session.begin_nested():
            yield
            session.flush()
    except IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) == "23505":
            raise CatalogConflict(message, **extra) from None
        raise


def refuse_taken(
    session: Session,
    query: Select[Any],
    message: str | Callable[[str], str],
    *,
    key: str,
) -> None:
    """Refuse a new version when ``query`` finds the id of one that already holds its place.

    Args:
        session: the caller's session.
        query: selects the id of a version with the same (series, instant), if any.
        message: the 409's message, or a function of the taken id that gives it.
        key: the name under which the taken id is reported.

    Raises:
        CatalogConflict: such a version exists.
    """
    taken = session.scalar(query)
    if taken is not None:
        text = message(taken) if callable(message) else message
        raise CatalogConflict(text, **{key: taken})


def insert_new(
    session: Session, head: Any, children: Iterable[object], what: str, **extra: object
) -> None:
    """Insert a catalog object that is never edited (a model, a package, a plan) and its children.

    Args:
        session: the caller's session (flushed, not committed).
        head: the object's row; its ``id`` is the operator's.
        children: its child rows (a plan's windows).
        what: the object named for the 409 (``"plan pro"``).
        **extra: the id under its key, for the 409.

    Raises:
        CatalogConflict: an object with the id exists (or is created meanwhile).
    """
    noun = what.split()[0]
    message = f"{what} already exists; {noun}s are never edited"
    if session.get(type(head), head.id) is not None:
        raise CatalogConflict(message, **extra)
    insert_version(session, head, children, message, **extra)


def insert_version(
    session: Session, head: object, children: Iterable[object], message: str, **extra: object
) -> None:
    """Insert a catalog object's row, then its child rows (prices, tiers, windows).

    In a savepoint: the race where another request inserts the same version at once becomes a
    409 with ``message`` (see :func:`conflict_as`).
    """
    with conflict_as(session, message, **extra):
        session.add(head)
        session.flush()
        session.add_all(children)
