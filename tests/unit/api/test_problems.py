"""Error answers are RFC 9457 problems of the error table, rendered by Litestar's plugin."""

from __future__ import annotations

from litestar import Litestar, get, post
from litestar.testing import TestClient

from api.db import CommitOutcomeUnknown
from api.errors import EXCEPTION_HANDLERS, Problem, problem_details_plugin
from ledger.errors import InvalidAmount


@get("/domain", sync_to_thread=False)
def _domain() -> None:
    raise InvalidAmount("amount: at most 2 decimals", field="amount")


@get("/lost-commit", sync_to_thread=False)
def _lost_commit() -> None:
    raise CommitOutcomeUnknown("replay the request with the same ids")


@post("/raised", status_code=200, sync_to_thread=False)
def _raised() -> None:
    raise Problem("webhook_processing_failed", "stored for retry", instance="/raised")


@get("/boom", sync_to_thread=False)
def _boom() -> None:
    raise RuntimeError("a bug")


def _client() -> TestClient[Litestar]:
    app = Litestar(
        [_domain, _lost_commit, _raised, _boom],
        exception_handlers=EXCEPTION_HANDLERS,
        plugins=[problem_details_plugin()],
    )
    return TestClient(app, raise_server_exceptions=False)


def test_a_domain_error_answers_its_code_status_title_and_extra_fields() -> None:
    with _client() as client:
        r = client.get("/domain")
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {
        "type": "/problems/invalid-amount",
        "title": "Invalid amount",
        "status": 400,
        "detail": "amount: at most 2 decimals",
        "instance": "/domain",
        "code": "invalid_amount",
        "field": "amount",
    }
    assert "retry-after" not in r.headers


def test_a_503_domain_error_says_when_to_retry() -> None:
    with _client() as client:
        r = client.get("/lost-commit")
    assert r.status_code == 503
    assert r.json()["code"] == "commit_unknown"
    assert r.headers["retry-after"] == "1"


def test_a_raised_problem_is_answered_as_it_says() -> None:
    with _client() as client:
        r = client.post("/raised")
    assert r.status_code == 500
    body = r.json()
    assert body["code"] == "webhook_processing_failed"
    assert body["type"] == "/problems/webhook-processing-failed"
    assert body["instance"] == "/raised"


def test_a_wrong_method_answers_405_with_the_allowed_methods() -> None:
    with _client() as client:
        r = client.get("/raised")
    assert r.status_code == 405
    assert r.json()["code"] == "method_not_allowed"
    assert "POST" in r.headers["allow"]


def test_an_unexpected_error_answers_500_without_its_message() -> None:
    with _client() as client:
        r = client.get("/boom")
    assert r.status_code == 500
    assert r.json()["code"] == "internal_error"
    assert "a bug" not in r.text
