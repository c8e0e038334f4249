"""Scheduler jobs: idempotent, each under a PostgreSQL advisory lock."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.idempotency import purge_expired
from api.logs import quiet_noisy_loggers
from api.settings import Settings
from invoicing.close import close_due
from invoicing.payments.gateway import PaymentGateway
from ledger.base import utcnow
from ledger.holds import expire_holds
from ledger.locks import lock_key
from wallet.authorizations import expire_authorizations
from wallet.lots import expire_lots, notify_expiring
from wallet.maintenance import ensure_usage_partitions, purge_usage_claims
from wallet.outbox import deliver_due
from wallet.subscriptions import renew_due

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Job:
    """A periodic job: a name (also its advisory-lock key), an interval and its work.

    ``run`` gets a session in the job's transaction, which holds the job's lock. A job with
    ``own_transactions`` gets a session outside any transaction instead (it makes its own short
    ones and keeps none open while it waits on the network), under a session-level lock.
    """

    name: str
    interval_seconds: int
    run: Callable[[Session], object]
    own_transactions: bool = False


def summary(result: object) -> str | None:
    """What a job did, in a few words, or None when it did nothing (so quiet runs log nothing).

    Counts, lists and reports that are zero or empty are nothing.
    """
    if result is None or result is False or result == 0:
        return None
    if isinstance(result, list | tuple | set | dict) and not result:
        return None
    if isinstance(result, dict):
        parts = {k: v for k, v in result.items() if summary(v) is not None}
        if not parts:
            return None
        return ", ".join(f"{k}={_short(v)}" for k, v in parts.items())
    fields = getattr(result, "__dataclass_fields__", None)
    if fields:
        parts = {k: getattr(result, k) for k in fields if summary(getattr(result, k)) is not None}
        if not parts:
            return None
        return ", ".join(f"{k}={_short(v)}" for k, v in parts.items())
    return _short(result)


def _short(value: object) -> str:
    if isinstance(value, list | tuple | set):
        return str(len(value))
    text = str(value)
    return text if len(text) <= 200 else text[:197] + "..."


def run_locked(factory: sessionmaker[Session], job: Job) -> bool:
    """Run ``job`` (in one transaction unless it makes its own) if no other process holds its lock.

    True if it ran.

    Logs what the job did (INFO), not that it ran: a run that did nothing logs nothing.
    """
    started = time.monotonic()
    ran, result = (_run_alone if job.own_transactions else _run_in_transaction)(factory, job)
    if not ran:
        log.debug("job %s is running elsewhere; skipped", job.name)
        return False
    did = summary(result)
    if did is not None:
        log.info("job %s: %s (%.2f s)", job.name, did, time.monotonic() - started)
    return True


def _run_in_transaction(factory: sessionmaker[Session], job: Job) -> tuple[bool, object]:
    with factory.begin() as session:
        if not session.scalar(select(func.pg_try_advisory_xact_lock(lock_key(job.name)))):
            return False, None
        return True, job.run(session)


def _run_alone(factory: sessionmaker[Session], job: Job) -> tuple[bool, object]:
    """Under a session-level lock held by an autocommit connection (idle, in no transaction)."""
    key = lock_key(job.name)
    with factory.kw["bind"].connect().execution_options(isolation_level="AUTOCOMMIT") as lock:
        if not lock.scalar(select(func.pg_try_advisory_lock(key))):
            return False, None
        try:
            with factory() as session:
                return True, job.run(session)
        finally:
            lock.scalar(select(func.pg_advisory_unlock(key)))


def quiet_scheduler_logs() -> None:
    """APScheduler logs every run of every job at INFO ("Running job ...", "executed successfully").

    Keep its warnings (missed runs, errors) only.
    """
    quiet_noisy_loggers()


def default_jobs(settings: Settings) -> list[Job]:
    """The jobs every deployment runs.

    Each is idempotent and bounded per run (it picks up the rest on its next run), so a crash or a
    second scheduler is harmless.
    """
    retention = timedelta(days=settings.tokenwallet_usage_retention_days)
    holds = settings.tokenwallet_hold_expiry_interval_seconds
    jobs = [
        # gateway holds: give lapsed reservations back to their lots (and void the ledger hold)
        Job("expire_authorizations", holds, lambda s: expire_authorizations(s)),
        # backstop for ledger holds nobody resolved (their expiry is an hour past the wallet's)
        Job("expire_ledger_holds", holds, lambda s: expire_holds(s)),
        Job("expire_lots", 60, lambda s: expire_lots(s)),
        Job("notify_expiring_credits", 3600, lambda s: notify_expiring(s)),
        Job("renew_subscriptions", 60, lambda s: renew_due(s)),
        Job(
            "deliver_webhooks",
            settings.tokenwallet_webhook_interval_seconds,
            lambda s: deliver_due(s),
            own_transactions=True,
        ),
        Job(
            "usage_partitions",
            3600,
            lambda s: ensure_usage_partitions(s, retention=retention),
        ),
        Job("purge_usage_claims", 3600, lambda s: purge_usage_claims(s, retention=retention)),
        Job(
            "purge_idempotency_keys",
            3600,
            lambda s: purge_expired(
                s,
                older_than=utcnow()
                - timedelta(hours=settings.tokenwallet_idempotency_key_retention_hours),
            ),
        ),
        Job(
            "ledger_audit",
            settings.tokenwallet_ledger_audit_interval_seconds,
            _ledger_audit,
        ),
        Job(
            "billing_close",
            settings.tokenwallet_billing_close_check_seconds,
            lambda s: close_due(s, grace=timedelta(hours=settings.tokenwallet_billing_grace_hours)),
        ),
    ]
    jobs += payment_jobs(settings)
    return jobs


def _ledger_audit(session: Session) -> object:
    from api.audit import run_ledger_audit

    problems = run_ledger_audit(session, actor="scheduler")
    if problems:
        log.error("ledger audit: %d invariant violation(s): %s", len(problems), problems[:5])
    return {"violations": len(problems)} if problems else None


def payment_jobs(settings: Settings, gateway: PaymentGateway | None = None) -> list[Job]:
    """With Stripe configured.

    Retry failed webhook events, and reconcile yesterday's Stripe balance transactions with
    ``cash:stripe`` (re-running a day replaces its report, and fees are booked once per balance
    transaction, so the frequent runs are harmless).
    """
    from api.payments import gateway_from_settings
    from invoicing.payments.events import retry_failed_events
    from invoicing.payments.reconcile import reconcile_day

    gw = gateway or gateway_from_settings(settings)
    if gw is None:
        return []

    def reconcile_yesterday(session: Session) -> object:
        yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
        return reconcile_day(session, gw, yesterday)

    return [
        Job(
            "stripe_event_retry",
            settings.stripe_event_retry_interval_seconds,
            lambda s: retry_failed_events(s),
        ),
        Job("stripe_reconcile", settings.stripe_reconcile_interval_seconds, reconcile_yesterday),
    ]


def _add_jobs(
    scheduler: BackgroundScheduler, factory: sessionmaker[Session], jobs: list[Job]
) -> None:
    for job in jobs:
        scheduler.add_job(
            run_locked,
            "interval",
            args=[factory, job],
            seconds=job.interval_seconds,
            id=job.name,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=job.interval_seconds,
        )


def start_background(factory: sessionmaker[Session], settings: Settings) -> BackgroundScheduler:
    """Start the jobs in a background thread of this process (``tokenwallet serve``)."""
    quiet_scheduler_logs()
    scheduler = BackgroundScheduler(timezone="UTC")
    _add_jobs(scheduler, factory, default_jobs(settings))
    scheduler.start()
    return scheduler


def run_blocking(factory: sessionmaker[Session], settings: Settings) -> None:
    """Run the jobs in the foreground until interrupted (``tokenwallet scheduler``)."""
    quiet_scheduler_logs()
    scheduler = BlockingScheduler(timezone="UTC")
    _add_jobs(scheduler, factory, default_jobs(settings))
    scheduler.start()
