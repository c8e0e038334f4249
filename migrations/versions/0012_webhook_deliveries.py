"""Outgoing webhooks: one delivery per event and endpoint (delivered once, retried with backoff,
dead letters an operator replays)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 01:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('wallet_outbox', sa.Column('fanned_out_at', sa.DateTime(timezone=True), nullable=True))
    # events delivered under the old scheme are done: no delivery rows for them
    op.execute("UPDATE wallet_outbox SET fanned_out_at = delivered_at WHERE delivered_at IS NOT NULL")
    op.create_table('wallet_webhook_deliveries',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.Text(), nullable=False),
    sa.Column('endpoint_id', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), server_default=sa.text("'pending'"), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('replays', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_status', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('dead_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'dead')", name=op.f('ck_wallet_webhook_deliveries_status_known')),
    sa.ForeignKeyConstraint(['endpoint_id'], ['wallet_webhook_endpoints.id'], name=op.f('fk_wallet_webhook_deliveries_endpoint_id_wallet_webhook_endpoints')),
    sa.ForeignKeyConstraint(['event_id'], ['wallet_outbox.id'], name=op.f('fk_wallet_webhook_deliveries_event_id_wallet_outbox')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wallet_webhook_deliveries')),
    sa.UniqueConstraint('event_id', 'endpoint_id', name='uq_wallet_webhook_deliveries_pair')
    )
    op.create_index(op.f('ix_wallet_webhook_deliveries_endpoint_id'), 'wallet_webhook_deliveries', ['endpoint_id'], unique=False)
    op.create_index(op.f('ix_wallet_webhook_deliveries_event_id'), 'wallet_webhook_deliveries', ['event_id'], unique=False)
    op.create_index('ix_wallet_webhook_deliveries_due', 'wallet_webhook_deliveries', ['next_attempt_at'], unique=False, postgresql_where=sa.text("status = 'pending'"))
    op.create_index('ix_wallet_webhook_deliveries_dead', 'wallet_webhook_deliveries', ['dead_at'], unique=False, postgresql_where=sa.text("status = 'dead'"))


def downgrade() -> None:
    op.drop_index('ix_wallet_webhook_deliveries_dead', table_name='wallet_webhook_deliveries', postgresql_where=sa.text("status = 'dead'"))
    op.drop_index('ix_wallet_webhook_deliveries_due', table_name='wallet_webhook_deliveries', postgresql_where=sa.text("status = 'pending'"))
    op.drop_index(op.f('ix_wallet_webhook_deliveries_event_id'), table_name='wallet_webhook_deliveries')
    op.drop_index(op.f('ix_wallet_webhook_deliveries_endpoint_id'), table_name='wallet_webhook_deliveries')
    op.drop_table('wallet_webhook_deliveries')
    op.drop_column('wallet_outbox', 'fanned_out_at')
