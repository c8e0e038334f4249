"""Ledger tables: accounts, journal entries and postings.

The invariants are enforced by PostgreSQL (see ``migrations/sql/ledger_*.sql``), not only here:

* every entry balances per book and unit (deferred constraint trigger, checked at commit);
* entries and postings are append-only (UPDATE, DELETE and TRUNCATE are rejected);
* cached balance columns change only through the posting trigger, so they always equal the
  sums of the account's postings; a direct UPDATE of them is rejected;
* an account that forbids negative balances can never go below zero (CHECK constraint).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    SmallInteger,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from ledger.base import Atoms, Base, UTCDateTime


class AccountType(StrEnum):
    """Accounting type; decides the normal side of the balance."""

    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    REVENUE = "revenue"
    CONTRA_REVENUE = "contra_revenue"
    EXPENSE = "expense"

    @property
    def debit_normal(self) -> bool:
        """True when debits increase the balance (assets, expenses, contra-revenue)."""
        return self in (AccountType.ASSET, AccountType.EXPENSE, AccountType.CONTRA_REVENUE)


class EntryKind(StrEnum):
    """What a journal entry records."""

    STANDARD = "standard"
    HOLD = "hold"
    HOLD_POST = "hold_post"
    HOLD_VOID = "hold_void"
    HOLD_EXPIRE = "hold_expire"
    REVERSAL = "reversal"


class Phase:
    """Posting phases (stored as small integers)."""

    POSTED = 0
    PENDING = 1
    RELEASE = 2


OPERATOR_BOOK = "operator"

_DEBIT_NORMAL_SQL = "type IN ('asset', 'expense', 'contra_revenue')"


class LedgerAccount(Base):
    """A ledger account in one unit and one book.

    ``debits_posted``/``credits_posted`` and ``debits_pending``/``credits_pending`` follow the
    TigerBeetle model: a pending debit reduces what a credit-normal account can spend, a pending
    credit does not add to it. Accounts with ``track_balance = false`` (house accounts every entry
    touches, e.g. revenue) keep no cached balance: theirs is derived from postings, so they never
    become one hot row.
    """

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        UniqueConstraint("id", "unit", "book", name="uq_ledger_accounts_id_unit_book"),
        UniqueConstraint(
            "book",
            "unit",
            "code",
            "owner_id",
            name="uq_ledger_accounts_identity",
            postgresql_nulls_not_distinct=True,
        ),
        CheckConstraint(
            "type IN ('asset','liability','equity','revenue','contra_revenue','expense')",
            name="type_known",
        ),
        CheckConstraint("track_balance OR NOT forbid_negative", name="forbid_negative_tracked"),
        CheckConstraint(
            "debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0"
            " AND credits_pending >= 0",
            name="counters_non_negative",
        ),
        CheckConstraint(
            f"NOT forbid_negative OR CASE WHEN {_DEBIT_NORMAL_SQL}"
            " THEN debits_posted - credits_posted - credits_pending >= 0"
            " ELSE credits_posted - debits_posted - debits_pending >= 0 END",
            name="no_negative_balance",
        ),
        Index("ix_ledger_accounts_owner_id", "owner_id"),
        # the posting trigger moves the counters: HOT updates on pages with room
        {"postgresql_with": {"fillfactor": 80}},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(Text)
    unit: Mapped[str] = mapped_column(Text)
    book: Mapped[str] = mapped_column(Text, server_default=text(f"'{OPERATOR_BOOK}'"))
    owner_id: Mapped[str | None] = mapped_column(Text)
    forbid_negative: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    track_balance: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    debits_posted: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    credits_posted: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    debits_pending: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    credits_pending: Mapped[int] = mapped_column(Atoms, server_default=text("0"))
    version: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class JournalEntry(Base):
    """A journal entry: a set of postings that balance per book and unit.

    Holds are entries of kind ``hold`` whose postings are pending; at most one entry resolves a
    hold (``hold_id`` is unique), whether it posts, voids or expires it.
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('standard','hold','hold_post','hold_void','hold_expire','reversal')",
            name="kind_known",
        ),
        CheckConstraint("(kind = 'hold') = (hold_expires_at IS NOT NULL)", name="hold_expiry"),
        CheckConstraint(
            "(kind IN ('hold_post','hold_void','hold_expire')) = (hold_id IS NOT NULL)",
            name="resolution_names_hold",
        ),
        CheckConstraint("(kind = 'reversal') = (reverses_entry_id IS NOT NULL)", name="reversal"),
        Index(
            "ix_ledger_entries_open_holds",
            "hold_expires_at",
            postgresql_where=text("kind = 'hold'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(Text, unique=True)
    description: Mapped[str] = mapped_column(Text, server_default=text("''"))
    hold_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ledger_entries.id"), unique=True
    )
    hold_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reverses_entry_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ledger_entries.id"), unique=True
    )
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )


class Posting(Base):
    """One leg of an entry: a signed amount (debit positive, credit negative) on one account.

    ``phase`` is 0 for a posted amount, 1 for a pending (held) amount and 2 for the release of
    a pending amount when its hold is resolved. ``unit`` and ``book`` are copied from the account
    so the balance check can group on them. The posting trigger checks, once per statement,
    that the entry was written by the same transaction and that the account exists with that
    unit and book (``migrations/sql/ledger_postings_checked.up.sql``; foreign keys did it once
    per row).
    """

    __tablename__ = "ledger_postings"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="amount_nonzero"),
        CheckConstraint("phase IN (0, 1, 2)", name="phase_known"),
        Index("ix_ledger_postings_account_entry", "account_id", "entry_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(BigInteger, index=True)
    account_id: Mapped[int] = mapped_column(BigInteger)
    unit: Mapped[str] = mapped_column(Text)
    book: Mapped[str] = mapped_column(Text)
    amount: Mapped[int] = mapped_column(Atoms)
    phase: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
