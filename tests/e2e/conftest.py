from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from api.app import create_app
from api.auth import ApiKeyAuthMiddleware, create_key
from api.settings import get_settings
from tests.e2e.served import Server
from tests.helpers import add_models, add_rate_card, key_headers, new_key, price

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def app(engine):
    ApiKeyAuthMiddleware._cache.clear()
    return create_app(engine)


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def admin_key(engine) -> str:
    with Session(engine) as s:
        key = create_key(s, role="admin", description="test admin")
        s.commit()
    return key.secret


@pytest.fixture
def admin(client, admin_key):
    client.headers["Authorization"] = f"Bearer {admin_key}"
    return client


@pytest.fixture
def cli(database_url, monkeypatch) -> Iterator[CliRunner]:
    """A runner of the ``tokenwallet`` CLI whose settings point at this test's database."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


@pytest.fixture
def keys(engine) -> dict[str, str]:
    """The secrets of a new admin key and a new gateway key, by role."""
    return {role: new_key(engine, role) for role in ("admin", "gateway")}


@pytest.fixture
def server(database_url, engine, tmp_path) -> Iterator[Server]:
    """A served ``tokenwallet serve`` process on this test's database, stopped afterwards."""
    srv = Server(database_url, tmp_path / "server.log")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def gw(admin, engine) -> dict[str, str]:
    """Catalog with one model ``m`` (USD 3 in / 15 out per Mtok from 2026-01-01).

    Returns the headers of a gateway key.
    """
    add_models(admin, "m")
    add_rate_card(admin, [price("m", "3", "15")], T0)
    return key_headers(engine, "gateway")
