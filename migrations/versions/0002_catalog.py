"""Catalog: models, rate cards, rating watermarks, contracts, reseller price books, packages,
plans, top-up bonus rules and failed-request policies

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 07:10:00.589745
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('catalog_failed_request_policies',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('provider_error', sa.Text(), nullable=False),
    sa.Column('provider_truncation', sa.Text(), nullable=False),
    sa.Column('refusal', sa.Text(), nullable=False),
    sa.Column('client_disconnect', sa.Text(), nullable=False),
    sa.Column('empty_completion', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("client_disconnect IN ('billed', 'not_billed', 'output_not_billed')", name=op.f('ck_catalog_failed_request_policies_client_disconnect_known')),
    sa.CheckConstraint("empty_completion IN ('billed', 'not_billed', 'output_not_billed')", name=op.f('ck_catalog_failed_request_policies_empty_completion_known')),
    sa.CheckConstraint("provider_error IN ('billed', 'not_billed', 'output_not_billed')", name=op.f('ck_catalog_failed_request_policies_provider_error_known')),
    sa.CheckConstraint("provider_truncation IN ('billed', 'not_billed', 'output_not_billed')", name=op.f('ck_catalog_failed_request_policies_provider_truncation_known')),
    sa.CheckConstraint("refusal IN ('billed', 'not_billed', 'output_not_billed')", name=op.f('ck_catalog_failed_request_policies_refusal_known')),
    sa.CheckConstraint('version >= 1', name=op.f('ck_catalog_failed_request_policies_version_positive')),
    sa.PrimaryKeyConstraint('id', 'version', name=op.f('pk_catalog_failed_request_policies'))
    )
    op.create_table('catalog_models',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('provider', sa.Text(), nullable=False),
    sa.Column('display_name', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_models'))
    )
    op.create_table('catalog_packages',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('price', sa.Numeric(38, 0), nullable=False),
    sa.Column('tokens', sa.BigInteger(), nullable=False),
    sa.Column('models', postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('valid_days', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('price >= 0', name=op.f('ck_catalog_packages_price_non_negative')),
    sa.CheckConstraint('tokens > 0', name=op.f('ck_catalog_packages_tokens_positive')),
    sa.CheckConstraint('valid_days >= 1', name=op.f('ck_catalog_packages_valid_days_positive')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_packages'))
    )
    op.create_table('catalog_plans',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('monthly_fee', sa.Numeric(38, 0), nullable=False),
    sa.Column('models', postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('on_exhausted', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("on_exhausted IN ('block', 'wallet')", name=op.f('ck_catalog_plans_on_exhausted_known')),
    sa.CheckConstraint('monthly_fee >= 0', name=op.f('ck_catalog_plans_monthly_fee_non_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_plans'))
    )
    op.create_table('catalog_rate_cards',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('effective_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_rate_cards')),
    sa.UniqueConstraint('currency', 'effective_from', name=op.f('uq_catalog_rate_cards_currency_effective_from'))
    )
    op.create_table('catalog_reseller_price_books',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('reseller_account_id', sa.Text(), nullable=False),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('markup_pct', sa.Numeric(precision=9, scale=2), nullable=True),
    sa.Column('effective_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('markup_pct IS NULL OR markup_pct >= 0', name=op.f('ck_catalog_reseller_price_books_markup_pct_non_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_reseller_price_books')),
    sa.UniqueConstraint('reseller_account_id', 'currency', 'effective_from', name=op.f('uq_catalog_reseller_price_books_reseller_account_id_currency_effective_from'))
    )
    op.create_table('catalog_topup_bonus_rules',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('owner_account_id', sa.Text(), nullable=True),
    sa.Column('effective_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_topup_bonus_rules')),
    sa.UniqueConstraint('currency', 'owner_account_id', 'effective_from', name=op.f('uq_catalog_topup_bonus_rules_currency_owner_account_id_effective_from'), postgresql_nulls_not_distinct=True)
    )
    op.create_table('rating_watermarks',
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('priced_through_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('currency', name=op.f('pk_rating_watermarks'))
    )
    op.create_table('catalog_contracts',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('rate_card_id', sa.Text(), nullable=True),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('all_models_discount_pct', sa.Numeric(precision=5, scale=2), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('all_models_discount_pct IS NULL OR (all_models_discount_pct >= 0 AND all_models_discount_pct <= 100)', name=op.f('ck_catalog_contracts_all_models_discount_pct_range')),
    sa.CheckConstraint('starts_at IS NULL OR ends_at IS NULL OR ends_at > starts_at', name=op.f('ck_catalog_contracts_term_ordered')),
    sa.ForeignKeyConstraint(['rate_card_id'], ['catalog_rate_cards.id'], name=op.f('fk_catalog_contracts_rate_card_id_catalog_rate_cards')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_contracts')),
    sa.UniqueConstraint('account_id', 'currency', 'version', name=op.f('uq_catalog_contracts_account_id_currency_version'))
    )
    op.create_table('catalog_plan_windows',
    sa.Column('plan_id', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('unit', sa.Text(), nullable=False),
    sa.Column('quota_limit', sa.BigInteger(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.CheckConstraint("kind IN ('rolling_5h', 'weekly', 'monthly')", name=op.f('ck_catalog_plan_windows_kind_known')),
    sa.CheckConstraint("unit IN ('requests', 'tokens')", name=op.f('ck_catalog_plan_windows_unit_known')),
    sa.CheckConstraint('quota_limit > 0', name=op.f('ck_catalog_plan_windows_quota_limit_positive')),
    sa.ForeignKeyConstraint(['plan_id'], ['catalog_plans.id'], name=op.f('fk_catalog_plan_windows_plan_id_catalog_plans')),
    sa.PrimaryKeyConstraint('plan_id', 'kind', 'unit', name=op.f('pk_catalog_plan_windows'))
    )
    op.create_table('catalog_rate_card_prices',
    sa.Column('card_id', sa.Text(), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('input_per_mtok', sa.Numeric(precision=30, scale=12), nullable=False),
    sa.Column('cache_read_per_mtok', sa.Numeric(precision=30, scale=12), nullable=False),
    sa.Column('cache_write_5m_per_mtok', sa.Numeric(precision=30, scale=12), nullable=False),
    sa.Column('cache_write_1h_per_mtok', sa.Numeric(precision=30, scale=12), nullable=False),
    sa.Column('output_per_mtok', sa.Numeric(precision=30, scale=12), nullable=False),
    sa.Column('reasoning_per_mtok', sa.Numeric(precision=30, scale=12), nullable=False),
    sa.Column('batch_discount_pct', sa.Numeric(precision=5, scale=2), nullable=False),
    sa.CheckConstraint('batch_discount_pct >= 0 AND batch_discount_pct <= 100', name=op.f('ck_catalog_rate_card_prices_batch_discount_pct_range')),
    sa.CheckConstraint('cache_read_per_mtok >= 0', name=op.f('ck_catalog_rate_card_prices_cache_read_per_mtok_non_negative')),
    sa.CheckConstraint('cache_write_1h_per_mtok >= 0', name=op.f('ck_catalog_rate_card_prices_cache_write_1h_per_mtok_non_negative')),
    sa.CheckConstraint('cache_write_5m_per_mtok >= 0', name=op.f('ck_catalog_rate_card_prices_cache_write_5m_per_mtok_non_negative')),
    sa.CheckConstraint('input_per_mtok >= 0', name=op.f('ck_catalog_rate_card_prices_input_per_mtok_non_negative')),
    sa.CheckConstraint('output_per_mtok >= 0', name=op.f('ck_catalog_rate_card_prices_output_per_mtok_non_negative')),
    sa.CheckConstraint('reasoning_per_mtok >= 0', name=op.f('ck_catalog_rate_card_prices_reasoning_per_mtok_non_negative')),
    sa.ForeignKeyConstraint(['card_id'], ['catalog_rate_cards.id'], name=op.f('fk_catalog_rate_card_prices_card_id_catalog_rate_cards')),
    sa.ForeignKeyConstraint(['model'], ['catalog_models.id'], name=op.f('fk_catalog_rate_card_prices_model_catalog_models')),
    sa.PrimaryKeyConstraint('card_id', 'model', name=op.f('pk_catalog_rate_card_prices'))
    )
    op.create_table('catalog_reseller_prices',
    sa.Column('book_id', sa.Text(), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('input_per_mtok', sa.Numeric(precision=30, scale=12), nullable=False),
    sa.Column('cache_read_per_mtok', sa.Numeric(precision=30, scale=12), nullable=False),
    sa.Column('cache_write_5m_per_mtok', sa.Numeric(precision=30, scale=12), nullable=False),
    sa.Column('cache_write_1h_per_mtok', sa.Numeric(precision=30, scale=12), nullable=False),
    sa.Column('output_per_mtok', sa.Numeric(precision=30, scale=12), nullable=False),
    sa.Column('reasoning_per_mtok', sa.Numeric(precision=30, scale=12), nullable=False),
    sa.Column('batch_discount_pct', sa.Numeric(precision=5, scale=2), nullable=False),
    sa.CheckConstraint('batch_discount_pct >= 0 AND batch_discount_pct <= 100', name=op.f('ck_catalog_reseller_prices_batch_discount_pct_range')),
    sa.CheckConstraint('cache_read_per_mtok >= 0', name=op.f('ck_catalog_reseller_prices_cache_read_per_mtok_non_negative')),
    sa.CheckConstraint('cache_write_1h_per_mtok >= 0', name=op.f('ck_catalog_reseller_prices_cache_write_1h_per_mtok_non_negative')),
    sa.CheckConstraint('cache_write_5m_per_mtok >= 0', name=op.f('ck_catalog_reseller_prices_cache_write_5m_per_mtok_non_negative')),
    sa.CheckConstraint('input_per_mtok >= 0', name=op.f('ck_catalog_reseller_prices_input_per_mtok_non_negative')),
    sa.CheckConstraint('output_per_mtok >= 0', name=op.f('ck_catalog_reseller_prices_output_per_mtok_non_negative')),
    sa.CheckConstraint('reasoning_per_mtok >= 0', name=op.f('ck_catalog_reseller_prices_reasoning_per_mtok_non_negative')),
    sa.ForeignKeyConstraint(['book_id'], ['catalog_reseller_price_books.id'], name=op.f('fk_catalog_reseller_prices_book_id_catalog_reseller_price_books')),
    sa.ForeignKeyConstraint(['model'], ['catalog_models.id'], name=op.f('fk_catalog_reseller_prices_model_catalog_models')),
    sa.PrimaryKeyConstraint('book_id', 'model', name=op.f('pk_catalog_reseller_prices'))
    )
    op.create_table('catalog_topup_bonus_tiers',
    sa.Column('rule_id', sa.Text(), nullable=False),
    sa.Column('min_amount', sa.Numeric(38, 0), nullable=False),
    sa.Column('bonus_pct', sa.Numeric(precision=5, scale=2), nullable=True),
    sa.Column('bonus_amount', sa.Numeric(38, 0), nullable=True),
    sa.Column('bonus_expires_days', sa.Integer(), nullable=True),
    sa.CheckConstraint('(bonus_pct IS NULL) <> (bonus_amount IS NULL)', name=op.f('ck_catalog_topup_bonus_tiers_one_bonus_kind')),
    sa.CheckConstraint('bonus_amount IS NULL OR bonus_amount >= 0', name=op.f('ck_catalog_topup_bonus_tiers_bonus_amount_non_negative')),
    sa.CheckConstraint('bonus_expires_days IS NULL OR bonus_expires_days >= 1', name=op.f('ck_catalog_topup_bonus_tiers_bonus_expires_days_positive')),
    sa.CheckConstraint('bonus_pct IS NULL OR (bonus_pct >= 0 AND bonus_pct <= 100)', name=op.f('ck_catalog_topup_bonus_tiers_bonus_pct_range')),
    sa.CheckConstraint('min_amount >= 0', name=op.f('ck_catalog_topup_bonus_tiers_min_amount_non_negative')),
    sa.ForeignKeyConstraint(['rule_id'], ['catalog_topup_bonus_rules.id'], name=op.f('fk_catalog_topup_bonus_tiers_rule_id_catalog_topup_bonus_rules')),
    sa.PrimaryKeyConstraint('rule_id', 'min_amount', name=op.f('pk_catalog_topup_bonus_tiers'))
    )
    op.create_table('catalog_contract_discounts',
    sa.Column('contract_id', sa.Text(), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('pct', sa.Numeric(precision=5, scale=2), nullable=False),
    sa.CheckConstraint('pct >= 0 AND pct <= 100', name=op.f('ck_catalog_contract_discounts_pct_range')),
    sa.ForeignKeyConstraint(['contract_id'], ['catalog_contracts.id'], name=op.f('fk_catalog_contract_discounts_contract_id_catalog_contracts')),
    sa.ForeignKeyConstraint(['model'], ['catalog_models.id'], name=op.f('fk_catalog_contract_discounts_model_catalog_models')),
    sa.PrimaryKeyConstraint('contract_id', 'model', name=op.f('pk_catalog_contract_discounts'))
    )


def downgrade() -> None:
    op.drop_table('catalog_contract_discounts')
    op.drop_table('catalog_topup_bonus_tiers')
    op.drop_table('catalog_reseller_prices')
    op.drop_table('catalog_rate_card_prices')
    op.drop_table('catalog_plan_windows')
    op.drop_table('catalog_contracts')
    op.drop_table('rating_watermarks')
    op.drop_table('catalog_topup_bonus_rules')
    op.drop_table('catalog_reseller_price_books')
    op.drop_table('catalog_rate_cards')
    op.drop_table('catalog_plans')
    op.drop_table('catalog_packages')
    op.drop_table('catalog_models')
    op.drop_table('catalog_failed_request_policies')
