"""Upstream cost cards (what the operator pays each vendor per model, the price dimensions of
rate cards) and the upstream of each usage record

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-30 12:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0018'
down_revision: str | None = '0017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PRICES = (
    'input_per_mtok', 'input_audio_per_mtok', 'input_image_per_mtok', 'cache_read_per_mtok',
    'cache_write_5m_per_mtok', 'cache_write_30m_per_mtok', 'cache_write_1h_per_mtok',
    'cache_write_12h_per_mtok', 'output_per_mtok', 'reasoning_per_mtok', 'output_audio_per_mtok',
    'output_image_per_mtok',
)
_NEW = (
    'input_audio_per_mtok', 'input_image_per_mtok', 'cache_write_30m_per_mtok',
    'cache_write_12h_per_mtok', 'output_audio_per_mtok', 'output_image_per_mtok',
)


def upgrade() -> None:
    op.create_table(
        'catalog_cost_cards',
        sa.Column('id', sa.Text(), nullable=False),
        sa.Column('upstream', sa.Text(), nullable=False),
        sa.Column('currency', sa.Text(), nullable=False),
        sa.Column('effective_from', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_cost_cards')),
        sa.UniqueConstraint('upstream', 'currency', 'effective_from', name=op.f('uq_catalog_cost_cards_upstream_currency_effective_from')),
    )
    checks = [
        sa.CheckConstraint(f'{c} >= 0', name=op.f(f'ck_catalog_cost_prices_{c}_non_negative'))
        for c in _PRICES if c not in _NEW
    ]
    checks.append(sa.CheckConstraint(' AND '.join(f'{c} >= 0' for c in _NEW), name=op.f('ck_catalog_cost_prices_dims_non_negative')))
    checks.append(sa.CheckConstraint('batch_discount_pct >= 0 AND batch_discount_pct <= 100', name=op.f('ck_catalog_cost_prices_batch_discount_pct_range')))
    op.create_table(
        'catalog_cost_prices',
        sa.Column('card_id', sa.Text(), nullable=False),
        sa.Column('model', sa.Text(), nullable=False),
        *[sa.Column(c, sa.Numeric(30, 12), nullable=False) for c in _PRICES],
        sa.Column('batch_discount_pct', sa.Numeric(5, 2), nullable=False),
        sa.Column('request_fees', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'"), nullable=False),
        sa.Column('service_tiers', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'"), nullable=False),
        sa.Column('context_tiers', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'"), nullable=False),
        sa.ForeignKeyConstraint(['card_id'], ['catalog_cost_cards.id'], name=op.f('fk_catalog_cost_prices_card_id_catalog_cost_cards')),
        sa.ForeignKeyConstraint(['model'], ['catalog_models.id'], name=op.f('fk_catalog_cost_prices_model_catalog_models')),
        sa.PrimaryKeyConstraint('card_id', 'model', name=op.f('pk_catalog_cost_prices')),
        *checks,
    )
    op.add_column('wallet_usage_records', sa.Column('upstream', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('wallet_usage_records', 'upstream')
    op.drop_table('catalog_cost_prices')
    op.drop_table('catalog_cost_cards')
