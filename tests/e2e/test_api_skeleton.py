from __future__ import annotations

import threading

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.models import ApiKey, IdempotencyRecord


def _is_problem(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status and body["code"] == code
    assert body["title"] and body["detail"] and body["type"].startswith("/problems/")
    return body


def test_health_reports_database(client):
    resp = client.get("/health")
    assert resp.status_code == 200
    assert resp.json()["database"] == "up"


def test_openapi_document_is_served(client):
    resp = client.get("/schema/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["openapi"].startswith("3.1")
    assert "/v1/api-keys" in doc["paths"] and "/health" in doc["paths"]


def test_metrics_in_prometheus_text_format(admin):
    admin.get("/v1/api-keys")
    resp = admin.get("/metrics")
    assert resp.status_code == 200
    assert "tokenwallet_requests_total" in resp.text


def test_missing_or_bad_key_is_401_problem(client):
    _is_problem(client.get("/v1/api-keys"), 401, "unauthorized")
    resp = client.get("/v1/api-keys", headers={"Authorization": "Bearer tw_adm_nope"})
    _is_problem(resp, 401, "unauthorized")


def test_create_key_shown_once_and_stored_hashed(admin, engine):
    resp = admin.post("/v1/api-keys", json={"role": "gateway", "description": "edge"})
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["key"].startswith("tw_gat_")
    with Session(engine) as s:
        row = s.get(ApiKey, created["id"])
        assert row is not None and created["key"] not in (row.secret_hash, row.prefix)
        assert len(row.secret_hash) == 64
    listed = admin.get("/v1/api-keys").json()["data"]
    assert created["id"] in [k["id"] for k in listed]
    assert all("key" not in k for k in listed)
    # the new key works, with its role's limits: a gateway may not manage keys (403)
    gw = {"Authorization": f"Bearer {created['key']}"}
    _is_problem(admin.get("/v1/api-keys", headers=gw), 403, "forbidden")


def test_revoked_key_stops_working(admin):
    created = admin.post("/v1/api-keys", json={"role": "finance"}).json()
    assert admin.post(f"/v1/api-keys/{created['id']}/revoke").status_code == 200
    from api.auth import ApiKeyAuthMiddleware

    ApiKeyAuthMiddleware._cache.clear()
    resp = admin.get("/v1/api-keys", headers={"Authorization": f"Bearer {created['key']}"})
    _is_problem(resp, 401, "unauthorized")
    _is_problem(admin.post("/v1/api-keys/key_missing/revoke"), 404, "not_found")


def test_bad_input_is_400_problem_and_changes_nothing(admin, engine):
    with Session(engine) as s:
        before = s.scalar(select(func.count()).select_from(ApiKey))
    body = _is_problem(admin.post("/v1/api-keys", json={"role": "root"}), 400, "validation_error")
    assert "role" in body["detail"] and body["errors"][0]["field"] == "role"
    _is_problem(admin.post("/v1/api-keys", json={"role": "customer"}), 400, "validation_error")
    _is_problem(admin.post("/v1/api-keys", content=b"{not json"), 400, "validation_error")
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(ApiKey)) == before


def test_unknown_route_and_method(admin):
    _is_problem(admin.get("/v1/nowhere"), 404, "not_found")
    _is_problem(admin.delete("/v1/api-keys"), 405, "method_not_allowed")


def test_idempotency_key_replays_and_refuses_other_bodies(admin, engine):
    h = {"Idempotency-Key": "create-gw-1"}
    first = admin.post("/v1/api-keys", json={"role": "gateway"}, headers=h)
    again = admin.post("/v1/api-keys", json={"role": "gateway"}, headers=h)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["key"] is None  # the secret is never stored, so never replayed
    _is_problem(
        admin.post("/v1/api-keys", json={"role": "finance"}, headers=h), 409, "idempotency_conflict"
    )
    _is_problem(
        admin.post(
            "/v1/api-keys", json={"role": "finance"}, headers={"Idempotency-Key": "x" * 300}
        ),
        400,
        "invalid_idempotency_key",
    )
    with Session(engine) as s:
        assert (
            s.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.role == "gateway")) == 1
        )
        assert s.scalar(select(func.count()).select_from(IdempotencyRecord)) == 1


def test_concurrent_requests_with_one_idempotency_key_create_once(admin, engine):
    results: list[int] = []
    barrier = threading.Barrier(8)

    def go() -> None:
        barrier.wait()
        r = admin.post(
            "/v1/api-keys", json={"role": "finance"}, headers={"Idempotency-Key": "race"}
        )
        results.append(r.status_code)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [201] * 8
    with Session(engine) as s:
        assert (
            s.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.role == "finance")) == 1
        )


def test_every_post_accepts_an_idempotency_key(client):
    schema = client.get("/schema/openapi.json").json()
    missing = [
        path
        for path, ops in schema["paths"].items()
        if "post" in ops
        and not any(
            p.get("in") == "header" and p.get("name") == "Idempotency-Key"
            for p in ops["post"].get("parameters", [])
        )
        and path != "/v1/webhooks/stripe"  # Stripe's own event id is the key there
    ]
    assert missing == []
