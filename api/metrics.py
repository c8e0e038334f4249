"""Business metrics on ``/metrics`` (beside the HTTP counters of the Prometheus middleware,
which leaves the gateway hot path out: one counter update per request there is measurable)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Histogram

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


def observe(ops: Sequence[Operation], results: Sequence[Any]) -> None:
    """Count a group's operations and outcomes."""
    GROUP_SIZE.observe(len(ops))
    for op, result in zip(ops, results, strict=True):
        name = _NAMES.get(type(op), "other")
        if isinstance(result, DomainError):
            GATEWAY_CALLS.labels(name, result.code).inc()
        elif isinstance(result, AuthorizationView):
            GATEWAY_CALLS.labels(name, result.decline_code or result.status).inc()
            if result.usage:
                _count_usage(result.usage)
        else:
            GATEWAY_CALLS.labels(name, "ok").inc()
            _count_usage(result)


def observe_failure(op: Operation, exc: BaseException) -> None:
    """Count an operation whose transaction failed."""
    GATEWAY_CALLS.labels(_NAMES.get(type(op), "other"), type(exc).__name__).inc()
