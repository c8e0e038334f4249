"""API keys: generation, hashed storage, authentication middleware and role guards."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import anyio
from cachetools import TTLCache
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session, sessionmaker

from api.models import ROLES, ApiKey
from ledger.base import utcnow
from ledger.errors import DomainError, NotFound
from wallet.models import Account

KEY_PREFIX = "tw"
_CACHE_TTL_SECONDS = 10


class InvalidRole(DomainError):
    """A role that does not exist, or a scoped role without an account."""

    code = "validation_error"


class UnknownAccount(DomainError):
    """A key for an account that does not exist."""

    code = "unknown_account"


class LastAdminKey(DomainError):
    """Revoking the last active admin key would leave nobody able to administer the API."""

    code = "last_admin_key"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id, role and (for scoped roles) account."""

    key_id: str
    role: str
    account_id: str | None

    def has_role(self, *roles: str) -> bool:
        """True for admins and for any of ``roles``."""
        return self.role == "admin" or self.role in roles


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly created key: ``secret`` is shown exactly once."""

    id: str
    role: str
    account_id: str | None
    secret: str


def hash_secret(secret: str) -> str:
    """SHA-256 of a key (keys are 256-bit random, so a fast hash is the right tool)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    session: Session,
    *,
    role: str,
    account_id: str | None = None,
    description: str = "",
    created_by: str | None = None,
) -> NewKey:
    """Create an API key and store only its hash. The caller commits.

    Raises:
        InvalidRole: unknown role, or ``reseller``/``customer`` without an account.
    """
    if role not in ROLES:
        raise InvalidRole(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    if role in ("reseller", "customer") and not account_id:
        raise InvalidRole(f"a {role} key needs the account it acts for (account_id)")
    if account_id is not None:
        _check_account(session, role, account_id)
    key_id = f"key_{secrets.token_hex(8)}"
    secret = f"{KEY_PREFIX}_{role[:3]}_{secrets.token_urlsafe(32)}"
    session.add(
        ApiKey(
            id=key_id,
            secret_hash=hash_secret(secret),
            prefix=secret[:10],
            role=role,
            account_id=account_id,
            description=description,
            created_by=created_by,
        )
    )
    session.flush()
    return NewKey(key_id, role, account_id, secret)


def _check_account(session: Session, role: str, account_id: str) -> None:
    """The account a key acts for must exist, be open, and (for a reseller key) be a reseller."""
    row = session.execute(
        select(Account.kind, Account.parent_id, Account.status).where(Account.id == account_id)
    ).first()
    if row is None:
        raise UnknownAccount(
            f"account {account_id} does not exist; create the account first"
            " (POST /v1/accounts), then its key"
        )
    if row.status == "closed":
        raise InvalidRole(f"account {account_id} is closed; it can have no new keys")
    if role == "reseller" and (row.kind != "reseller" or row.parent_id is not None):
        raise InvalidRole(
            f"account {account_id} is not a reseller; a reseller key acts for a reseller account"
            " (use role customer for a customer account)"
        )
    if role in ("admin", "finance"):
        raise InvalidRole(f"{role} keys act for every account; send no account_id")


def revoke_key(session: Session, key_id: str) -> None:
    """Revoke a key; it stops working within the authentication cache's lifetime (10 s).

    The last active admin key cannot be revoked: the active admin keys are locked first, so two
    admins revoking each other at once cannot both succeed.

    Raises:
        NotFound: no such key.
        LastAdminKey: ``key_id`` is the only active admin key.
    """
    admins = session.scalars(
        select(ApiKey.id)
        .where(ApiKey.role == "admin", ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.id)
        .with_for_update()
    ).all()
    if admins == [key_id]:
        raise LastAdminKey(
            f"{key_id} is the last active admin key; create another admin key first"
            " (POST /v1/api-keys, or `tokenwallet create-key --role admin`), then revoke this one"
        )
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(ApiKey.id)
    ).first()
    if result is None and session.get(ApiKey, key_id) is None:
        raise NotFound(f"API key {key_id} does not exist")


def lookup_key(session: Session, secret: str) -> Principal | None:
    """The principal of a live key, or None."""
    row = session.execute(
        select(ApiKey.id, ApiKey.role, ApiKey.account_id).where(
            ApiKey.secret_hash == hash_secret(secret), ApiKey.revoked_at.is_(None)
        )
    ).first()
    return Principal(row.id, row.role, row.account_id) if row else None


class ApiKeyAuthMiddleware(AbstractAuthenticationMiddleware):
    """Resolves ``Authorization: Bearer <key>`` to a :class:`Principal` (cached for 10 s)."""

    _cache: TTLCache[str, Principal] = TTLCache(maxsize=10_000, ttl=_CACHE_TTL_SECONDS)

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        """Find the principal of the request's bearer key, or refuse the request with 401."""
        header = connection.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise NotAuthorizedException("send an API key as 'Authorization: Bearer <key>'")
        secret = secret.strip()
        digest = hash_secret(secret)
        cached = self._cache.get(digest)
        if cached is not None:
            return AuthenticationResult(user=cached, auth=cached)
        factory: sessionmaker[Session] = connection.app.state.sessionmaker

        def _lookup() -> Principal | None:
            with factory() as s:
                return lookup_key(s, secret)

        principal = await anyio.to_thread.run_sync(_lookup)
        if principal is None:
            raise NotAuthorizedException("the API key is unknown or revoked")
        self._cache[digest] = principal
        return AuthenticationResult(user=principal, auth=principal)


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The authenticated principal of a request."""
    user = connection.scope.get("user")
    if not isinstance(user, Principal):
        raise NotAuthorizedException("authentication required")
    return user


def requires(*roles: str) -> Any:
    """A guard that lets admins and the given roles through (403 for the others).

    Async, so Litestar runs it on the event loop instead of handing it to a thread for every
    request.
    """

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = principal_of(connection)
        if not principal.has_role(*roles):
            allowed = ", ".join(("admin", *roles))
            raise PermissionDeniedException(
                f"a {principal.role} key may not call this endpoint (allowed: {allowed})"
            )

    guard.roles = ("admin", *roles)  # type: ignore[attr-defined]  # read by api.openapi
    return guard


def keys_query() -> Select[ApiKey]:
    """Every API key (revoked ones too), as a query to page by id."""
    return select(ApiKey)
