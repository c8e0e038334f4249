"""The scheduler's jobs on real PostgreSQL.

Every default job runs, twice is harmless, the advisory lock keeps two schedulers apart, and usage
ids are remembered as long as promised.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.scheduler import default_jobs, run_locked
from api.settings import Settings
from ledger.base import utcnow
from ledger.locks import lock_key
from tests.integration.wallet.conftest import funded, usage
from wallet.authorizations import authorize
from wallet.charging import charge_batch
from wallet.maintenance import ensure_usage_partitions, purge_usage_claims
from wallet.models import Authorization, UsageClaim

SETTINGS = Settings(database_url="postgresql://unused/none")


def test_every_default_job_runs_twice_without_error(priced, session_factory):
    names = [job.name for job in default_jobs(SETTINGS)]
    assert {
        "expire_authorizations",
        "expire_lots",
        "renew_subscriptions",
        "deliver_webhooks",
        "usage_partitions",
        "purge_usage_claims",
    } <= set(names)
    for _ in range(2):
        for job in default_jobs(SETTINGS):
            assert run_locked(session_factory, job), job.name


def test_a_job_held_by_another_scheduler_is_skipped(session_factory):
    job = next(j for j in default_jobs(SETTINGS) if j.name == "expire_lots")
    with session_factory.begin() as other:
        other.execute(select(func.pg_advisory_xact_lock(lock_key(job.name))))
        assert run_locked(session_factory, job) is False
    assert run_locked(session_factory, job) is True


def test_expiry_job_gives_a_lapsed_hold_back(priced: Session, session_factory):
    acc = funded(priced, "1.00")
    auth = authorize(
        priced,
        account_id=acc.id,
        model="m",
        estimated_input_tokens=0,
        max_output_tokens=1000,
        ttl=timedelta(seconds=1),
        at=utcnow() - timedelta(minutes=1),
    )
    priced.commit()
    job = next(j for j in default_jobs(SETTINGS) if j.name == "expire_authorizations")
    assert run_locked(session_factory, job)
    with session_factory() as s:
        assert s.get_one(Authorization, auth.id).status == "expired"


def test_old_usage_is_refused_and_old_claims_are_purged(priced: Session):
    acc = funded(priced, "1.00")
    now = utcnow()
    retention = timedelta(days=40)
    res = charge_batch(
        priced,
        [
            usage("old", acc, at=now - retention - timedelta(seconds=1)),
            usage("future", acc, at=now + timedelta(minutes=6)),
            usage("edge", acc, at=now - retention + timedelta(seconds=1)),
        ],
        now=now,
        retention=retention,
    )
    priced.commit()
    assert [(r.status, r.reason) for r in res] == [
        ("rejected", "usage_too_old"),
        ("rejected", "occurred_in_future"),
        ("charged", None),
    ]
    # the claim of "edge" outlives the window in which "edge" can still be sent again
    assert purge_usage_claims(priced, retention=retention, now=now + retention) == 0
    again = charge_batch(
        priced,
        [usage("edge", acc, at=now - retention + timedelta(seconds=1))],
        now=now + timedelta(seconds=1),
        retention=retention,
    )
    assert again[0].status == "duplicate"
    later = now + retention + timedelta(days=2)
    assert purge_usage_claims(priced, retention=retention, now=later) == 1
    priced.commit()
    assert priced.scalar(select(func.count()).select_from(UsageClaim)) == 0


def test_record_id_of_another_account_is_refused_not_leaked(priced: Session):
    a, b = funded(priced, "1.00"), funded(priced, "1.00")
    assert charge_batch(priced, [usage("same", a)])[0].status == "charged"
    priced.commit()
    r = charge_batch(priced, [usage("same", b)])[0]
    assert (r.status, r.reason, r.billed) == ("rejected", "id_conflict", None)


def test_partitions_are_kept_ahead(session: Session):
    far = utcnow() + timedelta(days=400)
    made = ensure_usage_partitions(session, now=far)
    assert made >= 4
    assert ensure_usage_partitions(session, now=far) == 0
    session.commit()
    names = set(
        session.scalars(
            sa.text("SELECT relname FROM pg_class WHERE relname LIKE 'wallet_usage_records_y%'")
        )
    )
    month = far.replace(day=1)
    assert f"wallet_usage_records_y{month:%Y}m{month:%m}" in names


def test_old_idempotency_keys_are_forgotten(session: Session):
    from api.idempotency import purge_expired

    now = utcnow()
    for key, age in (("old", timedelta(hours=80)), ("new", timedelta(hours=1))):
        session.execute(
            sa.text(
                "INSERT INTO idempotency_records (principal, key, method, path, request_hash,"
                " status_code, response_body, created_at)"
                " VALUES ('k', :key, 'POST', '/v1/x', 'h', 200, '', :at)"
            ),
            {"key": key, "at": now - age},
        )
    session.commit()
    assert purge_expired(session, older_than=now - timedelta(hours=72)) == 1
    session.commit()
    left = session.scalars(sa.text("SELECT key FROM idempotency_records")).all()
    assert left == ["new"]
