"""Payments a reseller records for its sub-accounts' overage (reseller's book)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 03:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('wallet_overage_payments',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('reseller_id', sa.Text(), nullable=False),
    sa.Column('amount', sa.Numeric(38, 0), nullable=False),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('reference', sa.Text(), nullable=False),
    sa.Column('entry_id', sa.BigInteger(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('amount > 0', name=op.f('ck_wallet_overage_payments_positive')),
    sa.ForeignKeyConstraint(['account_id'], ['wallet_accounts.id'], name=op.f('fk_wallet_overage_payments_account_id_wallet_accounts')),
    sa.ForeignKeyConstraint(['reseller_id'], ['wallet_accounts.id'], name=op.f('fk_wallet_overage_payments_reseller_id_wallet_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wallet_overage_payments')),
    sa.UniqueConstraint('account_id', 'reference', name='uq_wallet_overage_payments_reference')
    )
    op.create_index(op.f('ix_wallet_overage_payments_account_id'), 'wallet_overage_payments', ['account_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_wallet_overage_payments_account_id'), table_name='wallet_overage_payments')
    op.drop_table('wallet_overage_payments')
