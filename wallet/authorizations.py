"""Gateway authorizations as services.

Single-use holds, multi-capture grants and their increments, void and expiry. Each runs
:func:`wallet.gateway.execute` with one operation (the HTTP layer batches many); the caller commits.

An authorization reserves through the burn order (lots, plan quota, credit limit, and for a
reseller's sub-account the reseller's float at wholesale) and keeps the reservation in the
wallet: the lots' ``reserved`` column and the authorization's row. Usage records that name it
capture it; void and expiry give back exactly what is still reserved.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.base import utcnow
from ledger.errors import NotFound
from ledger.units import unit as unit_of
from wallet.accounts import EVERYTHING, Scope, get_account
from wallet.gateway import (
    AuthorizationView,
    Authorize,
    Grant,
    Increment,
    Release,
    execute,
    run_one,
    view_of,
)
from wallet.models import Authorization
from wallet.records import Rejected, UsageIn
from wallet.snapshot import auth_from_row, driver_connection
from wallet.snapshot_sql import AUTH_COLUMNS


def authorize(
    session: Session,
    *,
    account_id: str,
    model: str,
    estimated_input_tokens: int,
    max_output_tokens: int,
    ttl: timedelta,
    scope: Scope = EVERYTHING,
    at: datetime | None = None,
) -> AuthorizationView:
    """Reserve the most one call can cost; decline with a code when nothing can cover it.

    Raises:
        NotFound: the account is not visible to the caller.
        InvalidRequest: negative token estimates.
    """
    view: AuthorizationView = run_one(
        session,
        Authorize(account_id, model, estimated_input_tokens, max_output_tokens, ttl, scope),
        now=at,
    )
    return view


def grant(
    session: Session,
    *,
    account_id: str,
    ttl: timedelta,
    amount: str | None = None,
    tokens: int | None = None,
    model: str | None = None,
    scope: Scope = EVERYTHING,
    at: datetime | None = None,
) -> AuthorizationView:
    """Open a multi-capture authorization for up to ``amount`` of money or ``tokens``.

    ``tokens`` counts package tokens. What the account can give now is granted, ``final`` when
    that is all it can give.

    Raises:
        NotFound: the account is not visible to the caller.
        InvalidRequest, InvalidAmount: neither or both of amount and tokens, not positive, too
            precise, or a reseller's sub-account without a model.
    """
    view: AuthorizationView = run_one(
        session, Grant(account_id, ttl, amount, tokens, model, scope), now=at
    )
    return view


def increment(
    session: Session,
    authorization_id: str,
    *,
    amount: str | None = None,
    tokens: int | None = None,
    ttl: timedelta | None = None,
    records: tuple[UsageIn | Rejected, ...] = (),
    scope: Scope = EVERYTHING,
    at: datetime | None = None,
) -> AuthorizationView:
    """Charge ``records`` (the usage so far), then ask a multi-capture authorization for more.

    Raises:
        NotFound: unknown or invisible authorization.
        AuthorizationClosed: it was voided, captured or has expired.
        NotMultiCapture: a single-use hold.
    """
    view: AuthorizationView = run_one(
        session,
        Increment(authorization_id, amount, tokens, ttl, records, scope),
        now=at,
    )
    return view


def void_authorization(
    session: Session,
    authorization_id: str,
    *,
    scope: Scope = EVERYTHING,
    at: datetime | None = None,
) -> AuthorizationView:
    """Give back what an open authorization still reserves. Voiding a closed one changes nothing.

    Raises:
        NotFound: unknown or invisible authorization.
    """
    view: AuthorizationView = run_one(session, Release(authorization_id, "voided", scope), now=at)
    return view


def get_authorization(
    session: Session, authorization_id: str, *, scope: Scope = EVERYTHING
) -> AuthorizationView:
    """An authorization's current state (no locks are taken).

    Raises:
        NotFound: unknown or invisible authorization.
    """
    conn = driver_connection(session)
    row = conn.execute(
        f"SELECT {', '.join(AUTH_COLUMNS)} FROM wallet_authorizations WHERE id = %s",  # noqa: S608 (constant columns; the id is a parameter)
        (authorization_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"authorization {authorization_id} does not exist")
    auth = auth_from_row(row)
    account = get_account(session, auth.account_id, scope=scope)
    return view_of(auth, unit_of(account.currency))


def expire_authorizations(
    session: Session, *, now: datetime | None = None, limit: int = 500
) -> list[str]:
    """Release every open authorization past its expiry, exactly once."""
    at = now or utcnow()
    due = list(
        session.scalars(
            select(Authorization.id)
            .where(Authorization.status == "approved", Authorization.expires_at <= at)
            .order_by(Authorization.expires_at)
            .limit(limit)
        )
    )
    if not due:
        return []
    results = execute(session, [Release(i, "expired") for i in due], now=at)
    return [r.id for r in results if isinstance(r, AuthorizationView) and r.status == "expired"]
