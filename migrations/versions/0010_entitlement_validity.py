"""Entitlements cover only usage inside their validity (lots get valid_from; package and bonus
lots start when bought or granted); bank references looked up per transfer

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 05:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('wallet_credit_lots', sa.Column('valid_from', sa.DateTime(timezone=True), nullable=True))
    # lots bought or granted before this revision start when they were made
    op.execute(
        "UPDATE wallet_credit_lots SET valid_from = created_at"
        " WHERE kind IN ('package', 'bonus') AND valid_from IS NULL"
    )
    op.create_index(
        'ix_wallet_topups_bank_reference', 'wallet_topups', ['reference'], unique=False,
        postgresql_where=sa.text("method = 'bank_transfer' AND reference IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        'ix_wallet_topups_bank_reference', table_name='wallet_topups',
        postgresql_where=sa.text("method = 'bank_transfer' AND reference IS NOT NULL"),
    )
    op.drop_column('wallet_credit_lots', 'valid_from')
