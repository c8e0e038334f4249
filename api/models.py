"""Tables owned by the API layer: API keys, stored idempotent responses and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from ledger.base import Base, UTCDateTime

ROLES = ("admin", "finance", "gateway", "reseller", "customer")


class ApiKey(Base):
    """An API key. Only a SHA-256 hash of the secret is stored; the key is shown once."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(
            "role IN ('admin','finance','gateway','reseller','customer')", name="role_known"
        ),
        CheckConstraint(
            "role NOT IN ('reseller','customer') OR account_id IS NOT NULL",
            name="scoped_roles_have_account",
        ),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    secret_hash: Mapped[str] = mapped_column(Text, unique=True)
    prefix: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text)
    account_id: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, server_default=text("''"))
    created_by: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IdempotencyRecord(Base):
    """The first response to a POST with an ``Idempotency-Key``, kept for replays.

    It is stored in the same transaction as the request's effects, so a replay returns it and
    a different body is refused.
    """

    __tablename__ = "idempotency_records"
    __table_args__ = (PrimaryKeyConstraint("principal", "key"),)

    principal: Mapped[str] = mapped_column(Text)
    key: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    request_hash: Mapped[str] = mapped_column(Text)
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=text("now()"), index=True
    )


class AuditEvent(Base):
    """One change made by an admin or finance key (or the CLI, or a job that audits).

    Who, when, what, and the change itself (``changes``: the request, or ``before``/``after`` of the
    fields an edit changed). Written in the transaction of the change it records, so a change that
    rolled back leaves no event. Append-only: nothing updates or deletes rows.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_target", "target_id"),
        Index("ix_audit_events_actor", "actor"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    #: an API key id, ``cli`` or ``scheduler``
    actor: Mapped[str] = mapped_column(Text)
    actor_role: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    target_type: Mapped[str | None] = mapped_column(Text)
    target_id: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(Text)
    changes: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
