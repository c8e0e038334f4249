"""Invoice payments by card: a card payment may pay a finalized invoice (purpose 'invoice',
no top-up unless the money exceeded what was owed); invoice payments record the part reversed
by refunds and lost disputes

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 10:12:40.512904
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('invoicing_payments', sa.Column('reversed', sa.Numeric(precision=38, scale=0), server_default=sa.text('0'), nullable=False))
    op.create_check_constraint(op.f('ck_invoicing_payments_reversed_within_amount'), 'invoicing_payments', 'reversed >= 0 AND reversed <= amount')
    op.alter_column('payments', 'topup_id', existing_type=sa.Text(), nullable=True)
    op.drop_constraint(op.f('ck_payments_purpose_known'), 'payments', type_='check')
    op.create_check_constraint(op.f('ck_payments_purpose_known'), 'payments', "purpose IN ('topup', 'package', 'plan', 'invoice')")
    op.create_check_constraint(op.f('ck_payments_topup_unless_invoice'), 'payments', "topup_id IS NOT NULL OR purpose = 'invoice'")
    op.create_index('ix_payments_invoice', 'payments', ['purpose_ref'], unique=False, postgresql_where=sa.text("purpose = 'invoice'"))


def downgrade() -> None:
    # Card payments of invoices cannot be represented before this revision: refuse rather than
    # drop money records.
    op.execute(
        """
        DO $$
        BEGIN
          IF EXISTS (SELECT 1 FROM payments WHERE purpose = 'invoice') THEN
            RAISE EXCEPTION 'card payments of invoices exist; downgrading below 0007 would lose them';
          END IF;
        END $$;
        """
    )
    op.drop_index('ix_payments_invoice', table_name='payments', postgresql_where=sa.text("purpose = 'invoice'"))
    op.drop_constraint(op.f('ck_payments_topup_unless_invoice'), 'payments', type_='check')
    op.drop_constraint(op.f('ck_payments_purpose_known'), 'payments', type_='check')
    op.create_check_constraint(op.f('ck_payments_purpose_known'), 'payments', "purpose IN ('topup', 'package', 'plan')")
    op.alter_column('payments', 'topup_id', existing_type=sa.Text(), nullable=False)
    op.drop_constraint(op.f('ck_invoicing_payments_reversed_within_amount'), 'invoicing_payments', type_='check')
    op.drop_column('invoicing_payments', 'reversed')
