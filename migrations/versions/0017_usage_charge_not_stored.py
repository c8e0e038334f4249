"""Usage records do not store the charge by component: it doubled PostgreSQL's work per record
on the gateway path; the rated amount is stored and the breakdown is recomputed from the tokens
and the price in force (the result of the request carries it)

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30 14:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0017'
down_revision: str | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_column('wallet_usage_records', 'charge')


def downgrade() -> None:
    op.add_column('wallet_usage_records', sa.Column('charge', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
