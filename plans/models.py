"""Catalog tables: models, rate cards, price books, packages, plans, bonus rules, policies.

Every catalog object is append-only: rows are inserted, never updated (the one exception is
``rating_watermarks``, a monotonic high-water mark). A new version of a rate card, contract,
reseller price book, bonus rule or failed-request policy is a new row; the services in
:mod:`plans.catalog` choose the version in force at an instant.

Money is :class:`~ledger.base.Atoms` (integer atoms of 10**-18 of the currency); per-Mtok
prices are ``NUMERIC(30, 12)`` (exactly the precision :class:`~plans.prices.ModelPrice`
allows); percentages ``NUMERIC(5, 2)`` (markups ``NUMERIC(9, 2)``, they may exceed 100).
Prices stored on a card are the *resolved* ones (defaults applied), so changing a default
multiplier in code never reprices history.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from ledger.base import Atoms, Base, UTCDateTime
from plans.price_fields import PRICE_FIELDS

#: Per-Mtok price columns: 18 integer digits, 12 decimals (one token = whole atoms).
PriceNumeric = Numeric(30, 12)
#: Percent columns: 0..100 with 2 decimals.
PctNumeric = Numeric(5, 2)

#: the price columns are named after the price fields
_PRICE_COLUMNS = PRICE_FIELDS


#: price columns added by migration 0016, checked by one constraint
_NEW_PRICE_COLUMNS = (
    "input_audio_per_mtok",
    "input_image_per_mtok",
    "cache_write_30m_per_mtok",
    "cache_write_12h_per_mtok",
    "output_audio_per_mtok",
    "output_image_per_mtok",
)


def _price_checks() -> tuple[CheckConstraint, ...]:
    checks = [
        CheckConstraint(f"{col} >= 0", name=f"{col}_non_negative")
        for col in _PRICE_COLUMNS
        if col not in _NEW_PRICE_COLUMNS
    ]
    checks.append(
        CheckConstraint(
            " AND ".join(f"{col} >= 0" for col in _NEW_PRICE_COLUMNS), name="dims_non_negative"
        )
    )
    checks.append(
        CheckConstraint(
            "batch_discount_pct >= 0 AND batch_discount_pct <= 100", name="batch_discount_pct_range"
        )
    )
    return tuple(checks)


class _PriceColumns:
    """The resolved per-Mtok prices of one model (see :class:`plans.prices.ModelPrice`).

    Its per-request fees, service tiers and context tiers are resolved JSON (decimal strings,
    the shape of :meth:`plans.prices.ModelPrice.to_spec`).
    """

    input_per_mtok: Mapped[Decimal] = mapped_column(PriceNumeric)
    input_audio_per_mtok: Mapped[Decimal] = mapped_column(PriceNumeric)
    input_image_per_mtok: Mapped[Decimal] = mapped_column(PriceNumeric)
    cache_read_per_mtok: Mapped[Decimal] = mapped_column(PriceNumeric)
    cache_write_5m_per_mtok: Mapped[Decimal] = mapped_column(PriceNumeric)
    cache_write_30m_per_mtok: Mapped[Decimal] = mapped_column(PriceNumeric)
    cache_write_1h_per_mtok: Mapped[Decimal] = mapped_column(PriceNumeric)
    cache_write_12h_per_mtok: Mapped[Decimal] = mapped_column(PriceNumeric)
    output_per_mtok: Mapped[Decimal] = mapped_column(PriceNumeric)
    reasoning_per_mtok: Mapped[Decimal] = mapped_column(PriceNumeric)
    output_audio_per_mtok: Mapped[Decimal] = mapped_column(PriceNumeric)
    output_image_per_mtok: Mapped[Decimal] = mapped_column(PriceNumeric)
    batch_discount_pct: Mapped[Decimal] = mapped_column(PctNumeric)
    request_fees: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    service_tiers: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    context_tiers: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'"))


class CatalogModel(Base):
    """A model that can be priced, e.g. ``claude-sonnet-4``. Prices live on rate cards."""

    __tablename__ = "catalog_models"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    provider: Mapped[str] = mapped_column(Text)
    display_name: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class RateCardRow(Base):
    """A list rate card version: one currency, in force from ``effective_from`` on."""

    __tablename__ = "catalog_rate_cards"
    __table_args__ = (UniqueConstraint("currency", "effective_from"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    currency: Mapped[str] = mapped_column(Text)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class RateCardPriceRow(_PriceColumns, Base):
    """One model's resolved prices on a rate card."""

    __tablename__ = "catalog_rate_card_prices"
    __table_args__ = (PrimaryKeyConstraint("card_id", "model"), *_price_checks())

    card_id: Mapped[str] = mapped_column(Text, ForeignKey("catalog_rate_cards.id"))
    model: Mapped[str] = mapped_column(Text, ForeignKey("catalog_models.id"))


class CostCardRow(Base):
    """An upstream vendor's cost card version.

    What the operator pays that vendor per model (the same price dimensions as a rate card),
    in force from ``effective_from`` on.
    """

    __tablename__ = "catalog_cost_cards"
    __table_args__ = (UniqueConstraint("upstream", "currency", "effective_from"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    upstream: Mapped[str] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(Text)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class CostPriceRow(_PriceColumns, Base):
    """One model's resolved cost on a cost card."""

    __tablename__ = "catalog_cost_prices"
    __table_args__ = (PrimaryKeyConstraint("card_id", "model"), *_price_checks())

    card_id: Mapped[str] = mapped_column(Text, ForeignKey("catalog_cost_cards.id"))
    model: Mapped[str] = mapped_column(Text, ForeignKey("catalog_models.id"))


class RatingWatermark(Base):
    """The latest usage instant already priced in a currency (monotonic).

    A new rate card, contract or reseller price book may not take effect before it, so usage
    that was priced is never repriced by a later catalog change. ``NULL``: nothing priced yet.
    """

    __tablename__ = "rating_watermarks"

    currency: Mapped[str] = mapped_column(Text, primary_key=True)
    priced_through_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # set from the sequence ``catalog_versions`` by every change that can alter a price in this
    # currency (rate card, contract, reseller price book), in the same transaction: processes
    # cache the catalog per version
    catalog_version: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class ContractRow(Base):
    """An account's contract version; the latest version whose term contains an instant wins."""

    __tablename__ = "catalog_contracts"
    __table_args__ = (
        UniqueConstraint("account_id", "currency", "version"),
        CheckConstraint(
            "starts_at IS NULL OR ends_at IS NULL OR ends_at > starts_at", name="term_ordered"
        ),
        CheckConstraint(
            "all_models_discount_pct IS NULL OR "
            "(all_models_discount_pct >= 0 AND all_models_discount_pct <= 100)",
            name="all_models_discount_pct_range",
        ),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    account_id: Mapped[str] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    rate_card_id: Mapped[str | None] = mapped_column(Text, ForeignKey("catalog_rate_cards.id"))
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    all_models_discount_pct: Mapped[Decimal | None] = mapped_column(PctNumeric)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class ContractDiscountRow(Base):
    """A contract's discount for one model (replaces the all-models discount for it)."""

    __tablename__ = "catalog_contract_discounts"
    __table_args__ = (
        PrimaryKeyConstraint("contract_id", "model"),
        CheckConstraint("pct >= 0 AND pct <= 100", name="pct_range"),
    )

    contract_id: Mapped[str] = mapped_column(Text, ForeignKey("catalog_contracts.id"))
    model: Mapped[str] = mapped_column(Text, ForeignKey("catalog_models.id"))
    pct: Mapped[Decimal] = mapped_column(PctNumeric)


class ResellerPriceBookRow(Base):
    """A reseller's retail price book version for its sub-accounts (markup and/or overrides)."""

    __tablename__ = "catalog_reseller_price_books"
    __table_args__ = (
        UniqueConstraint("reseller_account_id", "currency", "effective_from"),
        CheckConstraint("markup_pct IS NULL OR markup_pct >= 0", name="markup_pct_non_negative"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    reseller_account_id: Mapped[str] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(Text)
    markup_pct: Mapped[Decimal | None] = mapped_column(Numeric(9, 2))
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class ResellerPriceRow(_PriceColumns, Base):
    """An explicit retail price for one model in a reseller's price book."""

    __tablename__ = "catalog_reseller_prices"
    __table_args__ = (PrimaryKeyConstraint("book_id", "model"), *_price_checks())

    book_id: Mapped[str] = mapped_column(Text, ForeignKey("catalog_reseller_price_books.id"))
    model: Mapped[str] = mapped_column(Text, ForeignKey("catalog_models.id"))


class PackageRow(Base):
    """A token package.

    ``tokens`` for ``price``, usable on ``models`` (empty: all) for ``valid_days`` after
    purchase.
    """

    __tablename__ = "catalog_packages"
    __table_args__ = (
        CheckConstraint("tokens > 0", name="tokens_positive"),
        CheckConstraint("price >= 0", name="price_non_negative"),
        CheckConstraint("valid_days >= 1", name="valid_days_positive"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(Text)
    price: Mapped[int] = mapped_column(Atoms)
    tokens: Mapped[int] = mapped_column(BigInteger)
    models: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    valid_days: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class PlanRow(Base):
    """A coding plan: a monthly fee and quota windows (see :class:`PlanWindowRow`)."""

    __tablename__ = "catalog_plans"
    __table_args__ = (
        CheckConstraint("monthly_fee >= 0", name="monthly_fee_non_negative"),
        CheckConstraint("on_exhausted IN ('block', 'wallet')", name="on_exhausted_known"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(Text)
    monthly_fee: Mapped[int] = mapped_column(Atoms)
    models: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    on_exhausted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class PlanWindowRow(Base):
    """One quota window of a plan; at most one per (kind, unit)."""

    __tablename__ = "catalog_plan_windows"
    __table_args__ = (
        PrimaryKeyConstraint("plan_id", "kind", "unit"),
        CheckConstraint("kind IN ('rolling_5h', 'weekly', 'monthly')", name="kind_known"),
        CheckConstraint("unit IN ('requests', 'tokens')", name="unit_known"),
        CheckConstraint("quota_limit > 0", name="quota_limit_positive"),
    )

    plan_id: Mapped[str] = mapped_column(Text, ForeignKey("catalog_plans.id"))
    kind: Mapped[str] = mapped_column(Text)
    unit: Mapped[str] = mapped_column(Text)
    quota_limit: Mapped[int] = mapped_column(BigInteger)
    position: Mapped[int] = mapped_column(Integer)


class BonusRuleRow(Base):
    """A top-up bonus rule version for (currency, owner).

    The latest ``effective_from <= at`` is in force. ``owner_account_id`` NULL: the operator's
    rule.
    """

    __tablename__ = "catalog_topup_bonus_rules"
    __table_args__ = (
        UniqueConstraint(
            "currency",
            "owner_account_id",
            "effective_from",
            postgresql_nulls_not_distinct=True,
        ),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    currency: Mapped[str] = mapped_column(Text)
    owner_account_id: Mapped[str | None] = mapped_column(Text)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class BonusTierRow(Base):
    """A tier of a bonus rule: from ``min_amount`` on, a percentage or a fixed bonus."""

    __tablename__ = "catalog_topup_bonus_tiers"
    __table_args__ = (
        PrimaryKeyConstraint("rule_id", "min_amount"),
        CheckConstraint("min_amount >= 0", name="min_amount_non_negative"),
        CheckConstraint("(bonus_pct IS NULL) <> (bonus_amount IS NULL)", name="one_bonus_kind"),
        CheckConstraint(
            "bonus_pct IS NULL OR (bonus_pct >= 0 AND bonus_pct <= 100)", name="bonus_pct_range"
        ),
        CheckConstraint(
            "bonus_amount IS NULL OR bonus_amount >= 0", name="bonus_amount_non_negative"
        ),
        CheckConstraint(
            "bonus_expires_days IS NULL OR bonus_expires_days >= 1",
            name="bonus_expires_days_positive",
        ),
    )

    rule_id: Mapped[str] = mapped_column(Text, ForeignKey("catalog_topup_bonus_rules.id"))
    min_amount: Mapped[int] = mapped_column(Atoms)
    bonus_pct: Mapped[Decimal | None] = mapped_column(PctNumeric)
    bonus_amount: Mapped[int | None] = mapped_column(Atoms)
    bonus_expires_days: Mapped[int | None] = mapped_column(Integer)


_TREATMENTS = "('billed', 'not_billed', 'output_not_billed')"


class FailedRequestPolicyRow(Base):
    """A version of a failed-request policy; every rule is stored resolved (defaults applied)."""

    __tablename__ = "catalog_failed_request_policies"
    __table_args__ = (
        PrimaryKeyConstraint("id", "version"),
        CheckConstraint("version >= 1", name="version_positive"),
        *(
            CheckConstraint(f"{rule} IN {_TREATMENTS}", name=f"{rule}_known")
            for rule in (
                "provider_error",
                "provider_truncation",
                "refusal",
                "client_disconnect",
                "empty_completion",
            )
        ),
    )

    id: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    provider_error: Mapped[str] = mapped_column(Text)
    provider_truncation: Mapped[str] = mapped_column(Text)
    refusal: Mapped[str] = mapped_column(Text)
    client_disconnect: Mapped[str] = mapped_column(Text)
    empty_completion: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
