"""Billing profiles can settle the tax on prepaid consumption from the paid credit

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 04:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('invoicing_billing_profiles', sa.Column('settle_from_prepaid', sa.Boolean(), server_default=sa.text('false'), nullable=False))


def downgrade() -> None:
    op.drop_column('invoicing_billing_profiles', 'settle_from_prepaid')
