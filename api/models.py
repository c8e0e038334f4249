"""Tables owned by the API layer: API keys and stored idempotent responses."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Integer, LargeBinary, PrimaryKeyConstraint, Text, text
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
    """The first response to a POST with an ``Idempotency-Key``, stored in the same transaction
    as the request's effects, so a replay returns it and a different body is refused."""

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
