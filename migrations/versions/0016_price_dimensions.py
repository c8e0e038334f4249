"""Price dimensions: 30-minute and 12-hour cache writes, audio and image token prices,
per-request fees, service tiers and context tiers on rate cards and reseller prices; usage
records keep the new token counts, tool calls, service tier and the charge by component

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0016'
down_revision: str | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PRICE_TABLES = ('catalog_rate_card_prices', 'catalog_reseller_prices')
# new price column -> the column whose value it takes in existing rows (the defaults of
# plans.prices.DEFAULTS: stored prices are resolved, so existing cards rate exactly as before)
_NEW_PRICES = {
    'input_audio_per_mtok': 'input_per_mtok',
    'input_image_per_mtok': 'input_per_mtok',
    'cache_write_30m_per_mtok': 'cache_write_5m_per_mtok',
    'cache_write_12h_per_mtok': 'cache_write_1h_per_mtok',
    'output_audio_per_mtok': 'output_per_mtok',
    'output_image_per_mtok': 'output_per_mtok',
}
_NEW_COUNTS = (
    'cache_write_30m_tokens', 'cache_write_12h_tokens', 'input_audio_tokens',
    'input_image_tokens', 'output_audio_tokens', 'output_image_tokens',
)


def upgrade() -> None:
    for table in _PRICE_TABLES:
        for column, source in _NEW_PRICES.items():
            op.add_column(table, sa.Column(column, sa.Numeric(30, 12), nullable=True))
            op.execute(f'UPDATE {table} SET {column} = {source}')
            op.alter_column(table, column, nullable=False)
        op.create_check_constraint(
            op.f(f'ck_{table}_dims_non_negative'), table,
            ' AND '.join(f'{column} >= 0' for column in _NEW_PRICES),
        )
        op.add_column(table, sa.Column('request_fees', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'"), nullable=False))
        op.add_column(table, sa.Column('service_tiers', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'"), nullable=False))
        op.add_column(table, sa.Column('context_tiers', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'"), nullable=False))
    for column in _NEW_COUNTS:
        op.add_column('wallet_usage_records', sa.Column(column, sa.BigInteger(), server_default=sa.text('0'), nullable=False))
    op.add_column('wallet_usage_records', sa.Column('tool_calls', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column('wallet_usage_records', sa.Column('service_tier', sa.Text(), nullable=True))
    op.add_column('wallet_usage_records', sa.Column('charge', postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    for column in ('charge', 'service_tier', 'tool_calls', *_NEW_COUNTS):
        op.drop_column('wallet_usage_records', column)
    for table in _PRICE_TABLES:
        for column in ('context_tiers', 'service_tiers', 'request_fees', *_NEW_PRICES):
            op.drop_column(table, column)
