"""RFC 9457 problem+json: one table from stable error codes to statuses, rendered by Litestar.

Every error answer is a :class:`Problem` (Litestar's ``ProblemDetailsException`` with the table's
status, title and ``code``), raised by a handler or built by the exception handlers below.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api.db import is_connection_failure
from ledger.errors import DomainError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

#: code -> (HTTP status, title). Titles are the same for every occurrence of a code.
ERROR_TABLE: dict[str, tuple[int, str]] = {
    # request shape
    "validation_error": (400, "The request is not valid"),
    "invalid_amount": (400, "Invalid amount"),
    "unknown_currency": (400, "Unknown currency"),
    "mixed_units": (400, "Amounts in different units"),
    "invalid_entry": (400, "Invalid journal entry"),
    "unbalanced_entry": (400, "Unbalanced journal entry"),
    "invalid_price": (400, "Invalid price"),
    "invalid_usage": (400, "Invalid usage record"),
    "usage_shape_mismatch": (400, "Provider object of another shape"),
    "usage_not_final": (400, "Provider object without final usage"),
    "unpriced_service_tier": (400, "Service tier not priced"),
    "invalid_idempotency_key": (400, "Invalid Idempotency-Key"),
    "invalid_characters": (400, "Control characters are not accepted"),
    "json_too_deep": (400, "JSON nested too deeply"),
    "invalid_period": (400, "Invalid billing period"),
    # auth and visibility (a key that may not see a resource gets 404, not 403)
    "unauthorized": (401, "Missing or invalid API key"),
    "forbidden": (403, "This API key's role may not do that"),
    "not_found": (404, "Not found"),
    "method_not_allowed": (405, "Method not allowed"),
    # state conflicts
    "insufficient_funds": (402, "Insufficient funds"),
    "idempotency_conflict": (409, "Idempotency key reused with a different request"),
    "hold_not_pending": (409, "Hold is no longer pending"),
    "authorization_closed": (409, "Authorization is closed"),
    "not_multi_capture": (409, "Not a multi-capture authorization"),
    "already_reversed": (409, "Entry already reversed"),
    "reference_used": (409, "Reference already recorded"),
    "conflict": (409, "Conflict"),
    "backdated_price_change": (409, "Change would reprice usage already priced"),
    "model_removal_unconfirmed": (409, "Rate card would stop pricing models in use"),
    "period_not_ended": (409, "Billing period not ended yet"),
    "period_out_of_order": (409, "A later billing period is already closed"),
    "invoice_state": (409, "Invoice status does not allow this"),
    "account_closed": (409, "The account is closed"),
    "account_not_empty": (409, "The account still holds money, debts or authorizations"),
    "last_admin_key": (409, "The last active admin key cannot be revoked"),
    "unknown_account": (422, "Unknown account"),
    "invoice_exists": (409, "The period's invoice exists already"),
    "unknown_cursor": (422, "starting_after names nothing in this list"),
    "currency_mismatch": (422, "The account uses another currency"),
    "credit_exceeds_invoice": (422, "Credit exceeds what is left to credit"),
    "payment_exceeds_balance": (422, "Payment exceeds the invoice's open balance"),
    "hold_exceeded": (422, "Amount exceeds the hold"),
    "refund_exceeds_unspent": (422, "Refund exceeds the unspent paid credit"),
    "unknown_model": (422, "Unknown model"),
    "no_rate_in_force": (422, "No rate card in force"),
    "payment_mismatch": (422, "Payment disagrees with the provider"),
    "invalid_webhook_signature": (400, "Invalid webhook signature"),
    # a deployment without Stripe keys: permanent until the operator configures them, so a
    # 4xx (5xx is kept for server faults and transient outages)
    "payments_not_configured": (422, "Payments are not configured"),
    # server side
    "payment_provider_error": (502, "The payment provider failed the request"),
    "webhook_processing_failed": (500, "The webhook could not be processed; it will be retried"),
    "service_unavailable": (503, "Service unavailable"),
    "concurrent_update": (503, "Busy with a concurrent update; retry"),
    "database_unavailable": (503, "The database is unavailable; retry"),
    "busy": (503, "Too busy right now; retry"),
    "commit_unknown": (503, "The outcome of the commit is unknown; replay the request"),
    "internal_error": (500, "Internal server error"),
}


class Problem(ProblemDetailsException):
    """A problem of the error table, raised or rendered by Litestar's ProblemDetails plugin.

    ``code`` gives the status (unless ``status`` overrides it) and the title; ``type`` is
    ``/problems/<code with dashes>``; extra fields that are None are left out.
    """

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        status: int | None = None,
        instance: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        """Build the problem of ``code``.

        Args:
            code: a key of :data:`ERROR_TABLE` (an unknown code answers 422 with its own title).
            detail: what happened and what to change, for a person.
            status: the HTTP status when it is not the table's.
            instance: the path the problem occurred at.
            headers: response headers (e.g. Retry-After).
            **extra: more members of the problem (``field``, ``errors``, ...).
        """
        table_status, title = ERROR_TABLE.get(code, (422, code.replace("_", " ").capitalize()))
        super().__init__(
            detail=detail,
            status_code=status or table_status,
            headers=headers,
            type_=f"/problems/{code.replace('_', '-')}",
            title=title,
            instance=instance,
            extra={"code": code, **{k: v for k, v in extra.items() if v is not None}},
        )
        self.code = code


def problem(
    request: Request[Any, Any, Any],
    code: str,
    detail: str,
    *,
    status: int | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    """The problem+json response of ``code`` at the request's path (see :class:`Problem`)."""
    exc = Problem(code, detail, status=status, instance=request.url.path, headers=headers, **extra)
    return exc.to_response(request)


def _domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    retry = {"Retry-After": "1"} if ERROR_TABLE.get(exc.code, (422,))[0] == 503 else None
    return problem(request, exc.code, exc.detail, headers=retry, **exc.extra)


def _validation_error(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[dict[str, Any]]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            errors.append(
                {"field": item.get("key"), "message": item.get("message"), "in": item.get("source")}
            )
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors if e["field"])
    detail = summary or str(exc.detail) or "the request body or parameters are not valid"
    return problem(request, "validation_error", detail, errors=errors or None)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    if isinstance(exc, NotAuthorizedException):
        code = "unauthorized"
    elif isinstance(exc, PermissionDeniedException):
        code = "forbidden"
    elif isinstance(exc, NotFoundException):
        code = "not_found"
    elif exc.status_code == 405:
        code = "method_not_allowed"
    elif exc.status_code >= 500:
        code = "service_unavailable" if exc.status_code == 503 else "internal_error"
    else:
        code = "validation_error"
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else code
    # exc.headers: e.g. a 405's Allow, the path's methods (RFC 9110)
    return problem(request, code, detail, status=exc.status_code, headers=exc.headers or None)


_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization, deadlock, lock timeout


_outage_logged_at = 0.0


def _retry_later(
    request: Request[Any, Any, Any], code: str, detail: str, *, seconds: int
) -> Response[dict[str, Any]]:
    """The problem ``code`` for this request's path, with ``Retry-After: seconds``."""
    return problem(request, code, detail, headers={"Retry-After": str(seconds)})


def _unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """The database cannot be reached.

    503 with Retry-After, one log line per outage (at most one a minute), not one per request.
    """
    global _outage_logged_at
    now = time.monotonic()
    if now - _outage_logged_at > 60:
        _outage_logged_at = now
        log.error("database unavailable: %s", str(exc).splitlines()[0] if str(exc) else exc)
    return _retry_later(
        request,
        "database_unavailable",
        "the database cannot be reached right now; nothing was changed. Retry shortly (with the"
        " same record ids or Idempotency-Key)",
        seconds=2,
    )


def _database_error(
    request: Request[Any, Any, Any], exc: DBAPIError | psycopg.Error
) -> Response[dict[str, Any]]:
    if is_connection_failure(exc):
        return _unavailable(request, exc)
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate not in _RETRYABLE_SQLSTATES:
        return _unexpected(request, exc)
    log.warning("retryable database conflict on %s: %s", request.url.path, sqlstate)
    return _retry_later(
        request,
        "concurrent_update",
        "another request changed the same data at the same moment and this one was rolled"
        " back; nothing was changed. Retry it (with the same Idempotency-Key)",
        seconds=1,
    )


def _pool_exhausted(request: Request[Any, Any, Any], exc: PoolTimeout) -> Response[dict[str, Any]]:
    log.warning("no database connection free for %s within the pool timeout", request.url.path)
    return _retry_later(
        request,
        "busy",
        "every database connection of this server is in use; nothing was changed. Retry shortly",
        seconds=1,
    )


def _too_deep(request: Request[Any, Any, Any], exc: RecursionError) -> Response[dict[str, Any]]:
    """A parser ran out of recursion on a deeply nested body.

    The boundary's depth check covers every body but usage batches, whose records are checked one by
    one.
    """
    return problem(
        request, "json_too_deep", "the body is nested too deeply to parse; flatten the document"
    )


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(
        request,
        "internal_error",
        "the server failed to handle this request; nothing was changed",
        status=HTTP_500_INTERNAL_SERVER_ERROR,
    )


def problem_details_plugin() -> ProblemDetailsPlugin:
    """Litestar's RFC 9457 plugin: a raised :class:`Problem` is answered as it says."""
    return ProblemDetailsPlugin(ProblemDetailsConfig())


EXCEPTION_HANDLERS: dict[type[Exception], Any] = {
    DomainError: _domain_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    DBAPIError: _database_error,
    psycopg.Error: _database_error,
    PoolTimeout: _pool_exhausted,
    RecursionError: _too_deep,
    Exception: _unexpected,
}
