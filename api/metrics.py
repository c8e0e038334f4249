"""Business metrics on ``/metrics``.

Beside the HTTP counters of the Prometheus middleware, which leaves the gateway hot path out: one
counter update per request there is measurable.

Counted in this process as calls are served: gateway calls by outcome, usage records charged
and rejected by reason, authorizations approved and declined by decline code. Read from the
database when ``/metrics`` is scraped (at most every 10 s, in a worker thread, so every process
reports the same truth whoever did the work): the outgoing webhook backlog and its failing
events, Stripe events whose processing failed, the last close's duration, and the result of the
last ledger audit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from ledger.errors import DomainError
from wallet.gateway import (
    AuthorizationView,
    Authorize,
    ChargeUsage,
    Grant,
    Increment,
    Operation,
    Release,
)

GATEWAY_CALLS = Counter(
    "tokenwallet_gateway_calls_total",
    "Gateway operations by kind and outcome",
    ["operation", "outcome"],
)
USAGE_RECORDS = Counter(
    "tokenwallet_usage_records_total",
    "Usage records by status and reason (rejections and failed-request credits)",
    ["status", "reason"],
)
GROUP_SIZE = Histogram(
    "tokenwallet_gateway_group_calls",
    "Gateway calls run together in one transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)

AUTHORIZATIONS = Counter(
    "tokenwallet_authorizations_total",
    "Authorizations, grants and increments approved or declined (with the decline code)",
    ["operation", "result", "decline_code"],
)

WEBHOOK_BACKLOG = Gauge(
    "tokenwallet_webhook_backlog",
    "Outgoing webhook deliveries (and events not fanned out yet) waiting to be delivered",
)
WEBHOOK_OLDEST = Gauge(
    "tokenwallet_webhook_backlog_oldest_seconds", "Age of the oldest webhook delivery waiting"
)
WEBHOOK_FAILING = Gauge(
    "tokenwallet_webhook_failing_deliveries",
    "Outgoing webhook deliveries still retried after failing at least once",
)
WEBHOOK_DEAD = Gauge(
    "tokenwallet_webhook_dead_deliveries",
    "Outgoing webhook deliveries given up after their last attempt (GET /v1/webhook-deliveries)",
)
STRIPE_EVENTS_FAILED = Gauge(
    "tokenwallet_stripe_events_failed", "Incoming Stripe events whose processing failed"
)
CLOSE_DURATION = Gauge(
    "tokenwallet_billing_close_duration_seconds",
    "How long the last closed billing period took to close",
    ["period"],
)
AUDIT_VIOLATIONS = Gauge(
    "tokenwallet_ledger_audit_violations",
    "Invariant violations found by the last ledger audit (0: clean; -1: never run)",
)
AUDIT_AT = Gauge(
    "tokenwallet_ledger_audit_last_run_timestamp_seconds", "When the last ledger audit ran"
)
DB_METRICS_UP = Gauge(
    "tokenwallet_db_metrics_up", "1 when the database metrics were read at the last scrape"
)

log = logging.getLogger(__name__)

_NAMES: dict[type[Any], str] = {
    ChargeUsage: "usage",
    Authorize: "authorize",
    Grant: "grant",
    Increment: "increment",
    Release: "void",
}


def _count_usage(results: Sequence[Any]) -> None:
    for r in results:
        USAGE_RECORDS.labels(r.status, r.reason or "").inc()


def _count_authorization(name: str, view: AuthorizationView) -> None:
    declined = view.status == "declined" or (name == "increment" and not view.granted_now)
    if declined:
        AUTHORIZATIONS.labels(name, "declined", view.decline_code or "").inc()
    else:
        AUTHORIZATIONS.labels(name, "approved", "").inc()


def observe(ops: Sequence[Operation], results: Sequence[Any]) -> None:
    """Count a group's operations and outcomes."""
    GROUP_SIZE.observe(len(ops))
    for op, result in zip(ops, results, strict=True):
        name = _NAMES.get(type(op), "other")
        if isinstance(result, DomainError):
            GATEWAY_CALLS.labels(name, result.code).inc()
        elif isinstance(result, AuthorizationView):
            GATEWAY_CALLS.labels(name, result.decline_code or result.status).inc()
            if name in ("authorize", "grant", "increment"):
                _count_authorization(name, result)
            if result.usage:
                _count_usage(result.usage)
        else:
            GATEWAY_CALLS.labels(name, "ok").inc()
            _count_usage(result)


def observe_failure(op: Operation, exc: BaseException) -> None:
    """Count an operation whose transaction failed."""
    GATEWAY_CALLS.labels(_NAMES.get(type(op), "other"), type(exc).__name__).inc()


_DB_STATE = text(
    """
    WITH waiting AS (
        SELECT created_at, attempts FROM wallet_webhook_deliveries WHERE status = 'pending'
        UNION ALL
        -- events not fanned out to their endpoints yet
        SELECT created_at, 0 FROM wallet_outbox
        WHERE fanned_out_at IS NULL AND delivered_at IS NULL
    )
    SELECT
      (SELECT count(*) FROM waiting) AS backlog,
      (SELECT extract(epoch FROM now() - min(created_at)) FROM waiting) AS oldest,
      (SELECT count(*) FROM waiting WHERE attempts > 0) AS failing,
      (SELECT count(*) FROM wallet_webhook_deliveries WHERE status = 'dead') AS dead,
      (SELECT count(*) FROM payment_events WHERE status = 'failed') AS stripe_failed
    """
)
_LAST_CLOSE = text(
    "SELECT period, extract(epoch FROM closed_at - started_at) AS seconds"
    " FROM invoicing_billing_periods WHERE status = 'closed' ORDER BY period DESC LIMIT 1"
)
_LAST_AUDIT = text(
    "SELECT extract(epoch FROM at) AS at, (changes ->> 'violations')::int AS violations"
    " FROM audit_events WHERE action = 'ledger.audit' ORDER BY id DESC LIMIT 1"
)

_REFRESH_SECONDS = 10.0
_refreshed_at = 0.0


def refresh_db_metrics(factory: sessionmaker[Session], *, force: bool = False) -> None:
    """Read the database-derived gauges (at most every 10 s unless ``force``).

    A database that cannot be read sets ``tokenwallet_db_metrics_up`` to 0 and leaves the gauges as
    they were.
    """
    global _refreshed_at
    now = time.monotonic()
    if not force and now - _refreshed_at < _REFRESH_SECONDS:
        return
    _refreshed_at = now
    try:
        with factory() as s:
            state = s.execute(_DB_STATE).one()
            close = s.execute(_LAST_CLOSE).first()
            audit = s.execute(_LAST_AUDIT).first()
    except Exception as exc:  # a scrape must not fail because the database is away
        DB_METRICS_UP.set(0)
        log.debug("database metrics not read: %s", exc)
        return
    DB_METRICS_UP.set(1)
    WEBHOOK_BACKLOG.set(int(state.backlog))
    WEBHOOK_OLDEST.set(float(state.oldest or 0))  # float-ok: seconds, a Prometheus gauge
    WEBHOOK_FAILING.set(int(state.failing))
    WEBHOOK_DEAD.set(int(state.dead))
    STRIPE_EVENTS_FAILED.set(int(state.stripe_failed))
    CLOSE_DURATION.clear()
    if close is not None:
        CLOSE_DURATION.labels(close.period).set(float(close.seconds or 0))  # float-ok: seconds
    if audit is None:
        AUDIT_VIOLATIONS.set(-1)
    else:
        AUDIT_VIOLATIONS.set(int(audit.violations or 0))
        AUDIT_AT.set(float(audit.at))  # float-ok: a Unix time, a Prometheus gauge
