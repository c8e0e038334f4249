"""Payments: card payments (Stripe), provider events (webhooks) stored unique by event id,
disputes, daily reconciliation reports; wallet credit freezes (disputed credit held until the
dispute closes)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 23:43:05.218263
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('payment_events',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('provider', sa.Text(), nullable=False),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('outcome', sa.Text(), server_default=sa.text("''"), nullable=False),
    sa.Column('object_id', sa.Text(), nullable=True),
    sa.Column('payment_intent_id', sa.Text(), nullable=True),
    sa.Column('payment_id', sa.Text(), nullable=True),
    sa.Column('livemode', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('provider_created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('processed', 'ignored', 'deferred', 'failed')", name=op.f('ck_payment_events_status_known')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_events'))
    )
    op.create_index('ix_payment_events_deferred', 'payment_events', ['payment_intent_id'], unique=False, postgresql_where=sa.text("status = 'deferred'"))
    op.create_index('ix_payment_events_failed', 'payment_events', ['received_at'], unique=False, postgresql_where=sa.text("status = 'failed'"))
    op.create_index(op.f('ix_payment_events_payment_id'), 'payment_events', ['payment_id'], unique=False)
    op.create_table('payment_reconciliations',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('provider', sa.Text(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('provider_net', sa.Numeric(38, 0), nullable=False),
    sa.Column('provider_fees', sa.Numeric(38, 0), nullable=False),
    sa.Column('ledger_net', sa.Numeric(38, 0), nullable=False),
    sa.Column('difference', sa.Numeric(38, 0), nullable=False),
    sa.Column('transactions', sa.Integer(), nullable=False),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('run_count', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_reconciliations')),
    sa.UniqueConstraint('provider', 'day', 'currency', name='uq_payment_reconciliations_day')
    )
    op.create_table('payments',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('provider', sa.Text(), nullable=False),
    sa.Column('purpose', sa.Text(), nullable=False),
    sa.Column('purpose_ref', sa.Text(), nullable=True),
    sa.Column('topup_id', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('amount', sa.Numeric(38, 0), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('refunded_minor', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('checkout_session_id', sa.Text(), nullable=True),
    sa.Column('checkout_url', sa.Text(), nullable=True),
    sa.Column('checkout_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('payment_intent_id', sa.Text(), nullable=True),
    sa.Column('charge_id', sa.Text(), nullable=True),
    sa.Column('fulfilled_ref', sa.Text(), nullable=True),
    sa.Column('fulfillment_error', sa.Text(), nullable=True),
    sa.Column('failure_code', sa.Text(), nullable=True),
    sa.Column('failure_message', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('succeeded_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("purpose IN ('topup', 'package', 'plan')", name=op.f('ck_payments_purpose_known')),
    sa.CheckConstraint("status IN ('pending', 'succeeded', 'failed', 'expired')", name=op.f('ck_payments_status_known')),
    sa.CheckConstraint('amount_minor > 0 AND refunded_minor >= 0', name=op.f('ck_payments_amounts_valid')),
    sa.ForeignKeyConstraint(['account_id'], ['wallet_accounts.id'], name=op.f('fk_payments_account_id_wallet_accounts')),
    sa.ForeignKeyConstraint(['topup_id'], ['wallet_topups.id'], name=op.f('fk_payments_topup_id_wallet_topups')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payments')),
    sa.UniqueConstraint('charge_id', name=op.f('uq_payments_charge_id')),
    sa.UniqueConstraint('checkout_session_id', name=op.f('uq_payments_checkout_session_id')),
    sa.UniqueConstraint('payment_intent_id', name=op.f('uq_payments_payment_intent_id')),
    sa.UniqueConstraint('topup_id', name=op.f('uq_payments_topup_id'))
    )
    op.create_index(op.f('ix_payments_account_id'), 'payments', ['account_id'], unique=False)
    op.create_table('wallet_credit_freezes',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('topup_id', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), server_default=sa.text("''"), nullable=False),
    sa.Column('requested', sa.Numeric(38, 0), nullable=False),
    sa.Column('frozen_paid', sa.Numeric(38, 0), nullable=False),
    sa.Column('frozen_bonus', sa.Numeric(38, 0), nullable=False),
    sa.Column('reserved', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('forfeit_account_id', sa.BigInteger(), nullable=False),
    sa.Column('hold_entry_id', sa.BigInteger(), nullable=True),
    sa.Column('resolution_entry_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('frozen', 'released', 'forfeited')", name=op.f('ck_wallet_credit_freezes_status_known')),
    sa.CheckConstraint('frozen_paid >= 0 AND frozen_bonus >= 0 AND requested >= 0', name=op.f('ck_wallet_credit_freezes_amounts_non_negative')),
    sa.ForeignKeyConstraint(['account_id'], ['wallet_accounts.id'], name=op.f('fk_wallet_credit_freezes_account_id_wallet_accounts')),
    sa.ForeignKeyConstraint(['forfeit_account_id'], ['ledger_accounts.id'], name=op.f('fk_wallet_credit_freezes_forfeit_account_id_ledger_accounts')),
    sa.ForeignKeyConstraint(['hold_entry_id'], ['ledger_entries.id'], name=op.f('fk_wallet_credit_freezes_hold_entry_id_ledger_entries')),
    sa.ForeignKeyConstraint(['resolution_entry_id'], ['ledger_entries.id'], name=op.f('fk_wallet_credit_freezes_resolution_entry_id_ledger_entries')),
    sa.ForeignKeyConstraint(['topup_id'], ['wallet_topups.id'], name=op.f('fk_wallet_credit_freezes_topup_id_wallet_topups')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wallet_credit_freezes')),
    sa.UniqueConstraint('key', name=op.f('uq_wallet_credit_freezes_key'))
    )
    op.create_index(op.f('ix_wallet_credit_freezes_account_id'), 'wallet_credit_freezes', ['account_id'], unique=False)
    op.create_index(op.f('ix_wallet_credit_freezes_topup_id'), 'wallet_credit_freezes', ['topup_id'], unique=False)
    op.create_table('payment_disputes',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('payment_id', sa.Text(), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('provider_status', sa.Text(), nullable=False),
    sa.Column('outcome', sa.Text(), server_default=sa.text("'open'"), nullable=False),
    sa.Column('withdrawn_minor', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('freeze_id', sa.Text(), nullable=True),
    sa.Column('receivable', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("outcome IN ('open', 'won', 'lost')", name=op.f('ck_payment_disputes_outcome_known')),
    sa.ForeignKeyConstraint(['freeze_id'], ['wallet_credit_freezes.id'], name=op.f('fk_payment_disputes_freeze_id_wallet_credit_freezes')),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], name=op.f('fk_payment_disputes_payment_id_payments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_disputes'))
    )
    op.create_index(op.f('ix_payment_disputes_payment_id'), 'payment_disputes', ['payment_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_payment_disputes_payment_id'), table_name='payment_disputes')
    op.drop_table('payment_disputes')
    op.drop_index(op.f('ix_wallet_credit_freezes_topup_id'), table_name='wallet_credit_freezes')
    op.drop_index(op.f('ix_wallet_credit_freezes_account_id'), table_name='wallet_credit_freezes')
    op.drop_table('wallet_credit_freezes')
    op.drop_index(op.f('ix_payments_account_id'), table_name='payments')
    op.drop_table('payments')
    op.drop_table('payment_reconciliations')
    op.drop_index(op.f('ix_payment_events_payment_id'), table_name='payment_events')
    op.drop_index('ix_payment_events_failed', table_name='payment_events', postgresql_where=sa.text("status = 'failed'"))
    op.drop_index('ix_payment_events_deferred', table_name='payment_events', postgresql_where=sa.text("status = 'deferred'"))
    op.drop_table('payment_events')
