"""The declarative base shared by every package's tables, and exact column types."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy import ColumnElement, DateTime, MetaData, Numeric, any_, literal, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_Row = TypeVar("_Row")


class Base(DeclarativeBase):
    """Declarative base for all tokenwallet tables (one MetaData for Alembic)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Atoms(TypeDecorator[int]):
    """An exact integer count of atoms stored as ``NUMERIC(38, 0)`` and read back as ``int``.

    38 digits hold 10**20 major units at 10**-18 atoms, far beyond any balance.
    """

    impl = Numeric(38, 0)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Decimal | None:
        """An int (never a bool) to the column's numeric."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"Atoms columns take int, got {type(value).__name__}")
        return Decimal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        """The column's numeric back to an int."""
        if value is None:
            return None
        return int(value)


class UTCDateTime(TypeDecorator[datetime]):
    """``timestamptz`` that refuses naive datetimes and always returns aware UTC values."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        """An aware datetime, in UTC; a naive one is refused."""
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise TypeError("timestamps must be timezone-aware datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """The stored moment as an aware UTC datetime."""
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.astimezone(UTC)


def in_array(column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """``column = ANY(:array)``.

    One bind parameter however many values (an ``IN`` list binds one parameter per value, which
    costs real time to render and parse at a thousand).
    """
    clause: ColumnElement[bool] = column == any_(literal(list(values), ARRAY(column.type)))
    return clause


def lock_row(session: Session, table: type[_Row], row_id: object) -> _Row:
    """The row of ``table`` whose primary key is ``row_id``, locked ``FOR UPDATE`` and read anew.

    An instance the session already holds is refreshed with the locked row's values
    (``populate_existing``), so what the caller reads is what it locked.

    Raises:
        sqlalchemy.exc.NoResultFound: no such row.
    """
    key = sa_inspect(table).primary_key[0]
    row: _Row = session.scalars(
        select(table)
        .where(key == row_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    return row


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


_DATABASE_KEYS: WeakKeyDictionary[Engine, str] = WeakKeyDictionary()


def database_key(session: Session) -> str:
    """Which database a session works on (its engine's URL), computed once per engine.

    A key for per-process caches of rows that never change; rendering a URL is not cheap.
    """
    engine = session.get_bind().engine
    key = _DATABASE_KEYS.get(engine)
    if key is None:
        key = _DATABASE_KEYS[engine] = str(engine.url)
    return key
