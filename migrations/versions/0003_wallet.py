"""Wallet: accounts, lots, top-ups, packages, subscriptions, quota windows, outbox, usage
records (partitioned by month) and claims, authorizations

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 07:46:45.064275
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations.sqlfile import run_sql_file

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('wallet_accounts',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('parent_id', sa.Text(), nullable=True),
    sa.Column('external_id', sa.Text(), nullable=True),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('credit_limit', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False),
    sa.Column('failed_request_policy_id', sa.Text(), nullable=True),
    sa.Column('discounts', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'"), nullable=False),
    sa.Column('burn_order', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('low_balance_threshold', sa.Numeric(38, 0), nullable=True),
    sa.Column('expiring_notice_days', sa.Integer(), server_default=sa.text('7'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("kind IN ('customer', 'reseller')", name=op.f('ck_wallet_accounts_kind_known')),
    sa.CheckConstraint('credit_limit >= 0', name=op.f('ck_wallet_accounts_credit_limit_non_negative')),
    sa.CheckConstraint('parent_id IS NULL OR parent_id <> id', name=op.f('ck_wallet_accounts_not_own_parent')),
    sa.ForeignKeyConstraint(['parent_id'], ['wallet_accounts.id'], name=op.f('fk_wallet_accounts_parent_id_wallet_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wallet_accounts'))
    )
    op.create_index('uq_wallet_accounts_external_id', 'wallet_accounts', [sa.text("coalesce(parent_id, '')"), 'external_id'], unique=True, postgresql_where=sa.text('external_id IS NOT NULL'))
    op.create_index(op.f('ix_wallet_accounts_parent_id'), 'wallet_accounts', ['parent_id'], unique=False)
    op.create_table('wallet_usage_claims',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wallet_usage_claims'))
    )
    op.create_index(op.f('ix_wallet_usage_claims_claimed_at'), 'wallet_usage_claims', ['claimed_at'], unique=False)
    op.create_table('wallet_usage_records',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('input_tokens', sa.BigInteger(), nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cache_read_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cache_write_5m_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cache_write_1h_tokens', sa.BigInteger(), nullable=False),
    sa.Column('reasoning_tokens', sa.BigInteger(), nullable=False),
    sa.Column('batch', sa.Boolean(), nullable=False),
    sa.Column('http_status', sa.Integer(), nullable=False),
    sa.Column('finish_reason', sa.Text(), nullable=True),
    sa.Column('failure_kind', sa.Text(), nullable=True),
    sa.Column('policy_id', sa.Text(), nullable=False),
    sa.Column('policy_version', sa.Integer(), nullable=False),
    sa.Column('price_source', sa.Text(), nullable=False),
    sa.Column('rate_card_id', sa.Text(), nullable=True),
    sa.Column('rated', sa.Numeric(38, 0), nullable=False),
    sa.Column('billed', sa.Numeric(38, 0), nullable=False),
    sa.Column('credited', sa.Numeric(38, 0), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('drawn', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('wholesale_billed', sa.Numeric(38, 0), nullable=True),
    sa.Column('authorization_id', sa.Text(), nullable=True),
    sa.Column('entry_id', sa.BigInteger(), nullable=True),
    sa.Column('tags', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.PrimaryKeyConstraint('occurred_at', 'id', name='pk_wallet_usage_records'),
    postgresql_partition_by='RANGE (occurred_at)'
    )
    run_sql_file("usage_partitions.up.sql")
    op.create_index('ix_wallet_usage_records_account', 'wallet_usage_records', ['account_id', 'occurred_at'], unique=False)
    op.create_index('ix_wallet_usage_records_id', 'wallet_usage_records', ['id'], unique=False)
    op.create_table('wallet_authorizations',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('decline_code', sa.Text(), nullable=True),
    sa.Column('held_money', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False),
    sa.Column('held_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('plan_covered', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('overage', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False),
    sa.Column('reserved', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('hold_entry_id', sa.BigInteger(), nullable=True),
    sa.Column('usage_record_id', sa.Text(), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('approved', 'declined', 'captured', 'voided', 'expired')", name=op.f('ck_wallet_authorizations_status_known')),
    sa.ForeignKeyConstraint(['account_id'], ['wallet_accounts.id'], name=op.f('fk_wallet_authorizations_account_id_wallet_accounts')),
    sa.ForeignKeyConstraint(['hold_entry_id'], ['ledger_entries.id'], name=op.f('fk_wallet_authorizations_hold_entry_id_ledger_entries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wallet_authorizations'))
    )
    op.create_index(op.f('ix_wallet_authorizations_account_id'), 'wallet_authorizations', ['account_id'], unique=False)
    op.create_index('ix_wallet_authorizations_open', 'wallet_authorizations', ['expires_at'], unique=False, postgresql_where=sa.text("status = 'approved'"))
    op.create_table('wallet_credit_lots',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('unit', sa.Text(), nullable=False),
    sa.Column('ledger_account_id', sa.BigInteger(), nullable=False),
    sa.Column('granted', sa.Numeric(38, 0), nullable=False),
    sa.Column('remaining', sa.Numeric(38, 0), nullable=False),
    sa.Column('priority', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('models', postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('price', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False),
    sa.Column('deferred', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False),
    sa.Column('source_type', sa.Text(), nullable=False),
    sa.Column('source_id', sa.Text(), nullable=False),
    sa.Column('expired_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("kind IN ('paid', 'bonus', 'package')", name=op.f('ck_wallet_credit_lots_kind_known')),
    sa.CheckConstraint('deferred >= 0', name=op.f('ck_wallet_credit_lots_deferred_non_negative')),
    sa.CheckConstraint('remaining >= 0 AND remaining <= granted', name=op.f('ck_wallet_credit_lots_remaining_in_range')),
    sa.ForeignKeyConstraint(['account_id'], ['wallet_accounts.id'], name=op.f('fk_wallet_credit_lots_account_id_wallet_accounts')),
    sa.ForeignKeyConstraint(['ledger_account_id'], ['ledger_accounts.id'], name=op.f('fk_wallet_credit_lots_ledger_account_id_ledger_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wallet_credit_lots'))
    )
    op.create_index('ix_wallet_credit_lots_expiry', 'wallet_credit_lots', ['expires_at'], unique=False, postgresql_where=sa.text('remaining > 0'))
    op.create_index('ix_wallet_credit_lots_open', 'wallet_credit_lots', ['account_id', 'kind'], unique=False, postgresql_where=sa.text('remaining > 0'))
    op.create_table('wallet_outbox',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('dedupe_key', sa.Text(), nullable=True),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['wallet_accounts.id'], name=op.f('fk_wallet_outbox_account_id_wallet_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wallet_outbox')),
    sa.UniqueConstraint('dedupe_key', name=op.f('uq_wallet_outbox_dedupe_key'))
    )
    op.create_index(op.f('ix_wallet_outbox_account_id'), 'wallet_outbox', ['account_id'], unique=False)
    op.create_index('ix_wallet_outbox_due', 'wallet_outbox', ['next_attempt_at'], unique=False, postgresql_where=sa.text('delivered_at IS NULL'))
    op.create_table('wallet_subscriptions',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('plan_id', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('current_period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('current_period_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cancel_at_period_end', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('canceled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('active', 'past_due', 'canceled')", name=op.f('ck_wallet_subscriptions_status_known')),
    sa.ForeignKeyConstraint(['account_id'], ['wallet_accounts.id'], name=op.f('fk_wallet_subscriptions_account_id_wallet_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wallet_subscriptions'))
    )
    op.create_index(op.f('ix_wallet_subscriptions_current_period_end'), 'wallet_subscriptions', ['current_period_end'], unique=False)
    op.create_index('uq_wallet_subscriptions_one_live', 'wallet_subscriptions', ['account_id'], unique=True, postgresql_where=sa.text("status <> 'canceled'"))
    op.create_table('wallet_webhook_endpoints',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=True),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('secret', sa.Text(), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['wallet_accounts.id'], name=op.f('fk_wallet_webhook_endpoints_account_id_wallet_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wallet_webhook_endpoints'))
    )
    op.create_index(op.f('ix_wallet_webhook_endpoints_account_id'), 'wallet_webhook_endpoints', ['account_id'], unique=False)
    op.create_table('wallet_package_purchases',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('package_id', sa.Text(), nullable=False),
    sa.Column('price', sa.Numeric(38, 0), nullable=False),
    sa.Column('tokens', sa.Numeric(38, 0), nullable=False),
    sa.Column('lot_id', sa.BigInteger(), nullable=False),
    sa.Column('entry_id', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['wallet_accounts.id'], name=op.f('fk_wallet_package_purchases_account_id_wallet_accounts')),
    sa.ForeignKeyConstraint(['entry_id'], ['ledger_entries.id'], name=op.f('fk_wallet_package_purchases_entry_id_ledger_entries')),
    sa.ForeignKeyConstraint(['lot_id'], ['wallet_credit_lots.id'], name=op.f('fk_wallet_package_purchases_lot_id_wallet_credit_lots')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wallet_package_purchases'))
    )
    op.create_index(op.f('ix_wallet_package_purchases_account_id'), 'wallet_package_purchases', ['account_id'], unique=False)
    op.create_table('wallet_quota_windows',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('subscription_id', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('unit', sa.Text(), nullable=False),
    sa.Column('limit', sa.BigInteger(), nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('window_end', sa.DateTime(timezone=True), nullable=True),
    sa.Column('used', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.CheckConstraint('used >= 0', name=op.f('ck_wallet_quota_windows_used_non_negative')),
    sa.ForeignKeyConstraint(['subscription_id'], ['wallet_subscriptions.id'], name=op.f('fk_wallet_quota_windows_subscription_id_wallet_subscriptions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wallet_quota_windows')),
    sa.UniqueConstraint('subscription_id', 'kind', 'unit', name='uq_wallet_quota_windows_kind')
    )
    op.create_table('wallet_subscription_periods',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('subscription_id', sa.Text(), nullable=False),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('period_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('fee', sa.Numeric(38, 0), nullable=False),
    sa.Column('entry_id', sa.BigInteger(), nullable=True),
    sa.Column('recognized_entry_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['entry_id'], ['ledger_entries.id'], name=op.f('fk_wallet_subscription_periods_entry_id_ledger_entries')),
    sa.ForeignKeyConstraint(['recognized_entry_id'], ['ledger_entries.id'], name=op.f('fk_wallet_subscription_periods_recognized_entry_id_ledger_entries')),
    sa.ForeignKeyConstraint(['subscription_id'], ['wallet_subscriptions.id'], name=op.f('fk_wallet_subscription_periods_subscription_id_wallet_subscriptions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wallet_subscription_periods')),
    sa.UniqueConstraint('subscription_id', 'period_start', name='uq_wallet_subscription_periods_start')
    )
    op.create_table('wallet_topups',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('method', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('amount', sa.Numeric(38, 0), nullable=False),
    sa.Column('bonus', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False),
    sa.Column('bonus_rule_id', sa.Text(), nullable=True),
    sa.Column('refunded', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False),
    sa.Column('bonus_clawed_back', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False),
    sa.Column('reference', sa.Text(), nullable=True),
    sa.Column('idempotency_key', sa.Text(), nullable=True),
    sa.Column('paid_lot_id', sa.BigInteger(), nullable=True),
    sa.Column('bonus_lot_id', sa.BigInteger(), nullable=True),
    sa.Column('entry_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("method IN ('bank_transfer', 'stripe', 'reseller')", name=op.f('ck_wallet_topups_method_known')),
    sa.CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name=op.f('ck_wallet_topups_status_known')),
    sa.ForeignKeyConstraint(['account_id'], ['wallet_accounts.id'], name=op.f('fk_wallet_topups_account_id_wallet_accounts')),
    sa.ForeignKeyConstraint(['bonus_lot_id'], ['wallet_credit_lots.id'], name=op.f('fk_wallet_topups_bonus_lot_id_wallet_credit_lots')),
    sa.ForeignKeyConstraint(['entry_id'], ['ledger_entries.id'], name=op.f('fk_wallet_topups_entry_id_ledger_entries')),
    sa.ForeignKeyConstraint(['paid_lot_id'], ['wallet_credit_lots.id'], name=op.f('fk_wallet_topups_paid_lot_id_wallet_credit_lots')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wallet_topups')),
    sa.UniqueConstraint('account_id', 'idempotency_key', name='uq_wallet_topups_idempotency')
    )
    op.create_index(op.f('ix_wallet_topups_account_id'), 'wallet_topups', ['account_id'], unique=False)


def downgrade() -> None:
    run_sql_file("usage_partitions.down.sql")
    op.drop_index(op.f('ix_wallet_topups_account_id'), table_name='wallet_topups')
    op.drop_table('wallet_topups')
    op.drop_table('wallet_subscription_periods')
    op.drop_table('wallet_quota_windows')
    op.drop_index(op.f('ix_wallet_package_purchases_account_id'), table_name='wallet_package_purchases')
    op.drop_table('wallet_package_purchases')
    op.drop_index(op.f('ix_wallet_webhook_endpoints_account_id'), table_name='wallet_webhook_endpoints')
    op.drop_table('wallet_webhook_endpoints')
    op.drop_index('uq_wallet_subscriptions_one_live', table_name='wallet_subscriptions', postgresql_where=sa.text("status <> 'canceled'"))
    op.drop_index(op.f('ix_wallet_subscriptions_current_period_end'), table_name='wallet_subscriptions')
    op.drop_table('wallet_subscriptions')
    op.drop_index('ix_wallet_outbox_due', table_name='wallet_outbox', postgresql_where=sa.text('delivered_at IS NULL'))
    op.drop_index(op.f('ix_wallet_outbox_account_id'), table_name='wallet_outbox')
    op.drop_table('wallet_outbox')
    op.drop_index('ix_wallet_credit_lots_open', table_name='wallet_credit_lots', postgresql_where=sa.text('remaining > 0'))
    op.drop_index('ix_wallet_credit_lots_expiry', table_name='wallet_credit_lots', postgresql_where=sa.text('remaining > 0'))
    op.drop_table('wallet_credit_lots')
    op.drop_index('ix_wallet_authorizations_open', table_name='wallet_authorizations', postgresql_where=sa.text("status = 'approved'"))
    op.drop_index(op.f('ix_wallet_authorizations_account_id'), table_name='wallet_authorizations')
    op.drop_table('wallet_authorizations')
    op.drop_index('ix_wallet_usage_records_id', table_name='wallet_usage_records')
    op.drop_index('ix_wallet_usage_records_account', table_name='wallet_usage_records')
    op.drop_table('wallet_usage_records')
    op.drop_index(op.f('ix_wallet_usage_claims_claimed_at'), table_name='wallet_usage_claims')
    op.drop_table('wallet_usage_claims')
    op.drop_index(op.f('ix_wallet_accounts_parent_id'), table_name='wallet_accounts')
    op.drop_index('uq_wallet_accounts_external_id', table_name='wallet_accounts')
    op.drop_table('wallet_accounts')
