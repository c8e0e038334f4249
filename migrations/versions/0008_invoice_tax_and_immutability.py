"""Invoice lines keep their taxable part (prepaid consumption is taxed on what was paid with
money); finalized invoices and their lines are immutable in the database (trigger)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 01:44:57.228451
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.sqlfile import run_sql_file

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('invoicing_invoice_lines', sa.Column('taxable', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False))
    # lines written before: only due lines were taxed, on their whole amount
    op.execute(
        "UPDATE invoicing_invoice_lines SET taxable = amount"
        " WHERE settlement = 'due' AND tax_rate_pct IS NOT NULL"
    )
    run_sql_file("invoicing_immutable.up.sql")


def downgrade() -> None:
    run_sql_file("invoicing_immutable.down.sql")
    op.drop_column('invoicing_invoice_lines', 'taxable')
