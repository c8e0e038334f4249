"""Gateway holds reserve plan quota and the reseller's credit limit too; one deferred ledger
check per entry instead of one per posting; usage partitions bounded at UTC midnight; a
catalog version per currency (processes cache prices by it)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 10:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations.sqlfile import run_sql_file

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        'wallet_authorizations',
        sa.Column(
            'reserved_quota',
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column(
        'wallet_authorizations',
        sa.Column('reseller_overage', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False),
    )


    op.execute("CREATE SEQUENCE catalog_versions")
    op.add_column(
        'rating_watermarks',
        sa.Column('catalog_version', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    )
    run_sql_file("entry_check_per_entry.up.sql")
    run_sql_file("usage_partitions_utc.up.sql")


def downgrade() -> None:
    op.drop_column('rating_watermarks', 'catalog_version')
    op.execute("DROP SEQUENCE catalog_versions")
    run_sql_file("entry_check_per_entry.down.sql")
    op.drop_column('wallet_authorizations', 'reseller_overage')
    op.drop_column('wallet_authorizations', 'reserved_quota')
