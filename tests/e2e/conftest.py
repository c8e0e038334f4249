from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session

from api.app import create_app
from api.auth import ApiKeyAuthMiddleware, create_key


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
