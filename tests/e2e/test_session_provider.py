"""The request's session: a write handler that returns commits, an exception or a read discards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar import Litestar, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db import make_sessionmaker
from api.deps import provide_db
from api.models import IdempotencyRecord
from ledger.errors import NotFound


def _write(db: Session, key: str) -> None:
    db.add(
        IdempotencyRecord(
            principal="session-test",
            key=key,
            method="POST",
            path="/",
            request_hash="",
            status_code=0,
            response_body=b"",
        )
    )
    db.flush()


@post("/returns", sync_to_thread=True)
def returns_after_writing(db: Session) -> dict[str, str]:
    _write(db, "returns")
    return {"ok": "yes"}


@post("/raises", sync_to_thread=True)
def raises_after_writing(db: Session) -> dict[str, str]:
    _write(db, "raises")
    raise NotFound("after a write")


@get("/reads", sync_to_thread=True)
def reads_after_writing(db: Session) -> dict[str, str]:
    _write(db, "reads")
    return {"ok": "yes"}


@pytest.fixture
def plain(engine) -> Iterator[TestClient]:
    app = Litestar(
        [returns_after_writing, raises_after_writing, reads_after_writing],
        dependencies={"db": Provide(provide_db)},
        state=State({"sessionmaker": make_sessionmaker(engine)}),
    )
    with TestClient(app) as c:
        yield c


def _kept(engine) -> set[str]:
    with Session(engine) as s:
        rows = s.scalars(
            select(IdempotencyRecord.key).where(IdempotencyRecord.principal == "session-test")
        )
        return set(rows)


def test_a_write_handler_that_returns_commits_what_it_left(plain, engine):
    assert plain.post("/returns").status_code == 201
    assert _kept(engine) == {"returns"}


def test_a_handler_that_raises_keeps_nothing(plain, engine):
    assert plain.post("/raises").status_code >= 400
    assert _kept(engine) == set()


def test_a_read_never_commits(plain, engine):
    assert plain.get("/reads").status_code == 200
    assert _kept(engine) == set()
