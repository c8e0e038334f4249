"""Failed card refunds undone once (refunds by id, refund applications), invoices disputed while
a payment on them is disputed, credit notes that give bonus back as bonus

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 00:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations.sqlfile import run_sql_file

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('payment_refunds',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('payment_id', sa.Text(), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('failure_reason', sa.Text(), nullable=True),
    sa.Column('provider_created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('undone_minor', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('undo_entry_ids', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('amount_minor > 0 AND undone_minor >= 0', name=op.f('ck_payment_refunds_amounts_valid')),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], name=op.f('fk_payment_refunds_payment_id_payments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_refunds'))
    )
    op.create_index(op.f('ix_payment_refunds_payment_id'), 'payment_refunds', ['payment_id'], unique=False)
    op.create_table('payment_refund_applications',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('payment_id', sa.Text(), nullable=False),
    sa.Column('total_minor', sa.BigInteger(), nullable=False),
    sa.Column('delta_minor', sa.BigInteger(), nullable=False),
    sa.Column('parts', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('undone_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('delta_minor > 0', name=op.f('ck_payment_refund_applications_positive')),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], name=op.f('fk_payment_refund_applications_payment_id_payments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_refund_applications'))
    )
    op.create_index(op.f('ix_payment_refund_applications_payment_id'), 'payment_refund_applications', ['payment_id'], unique=False)
    # Refunds applied before this revision: one application per total reached, from their
    # ledger entries' keys (card-refund:<payment>:<total>[:credit|:invoice|:spent]).
    op.execute(
        """
        INSERT INTO payment_refund_applications (payment_id, total_minor, delta_minor, parts, created_at)
        SELECT payment_id, total, total - coalesce(lag(total) OVER w, 0), parts, created_at
        FROM (
            SELECT p.id AS payment_id, split_part(e.idempotency_key, ':', 3)::bigint AS total,
                   jsonb_agg(
                       CASE WHEN e.metadata->>'kind' = 'invoice_payment_reversal'
                            THEN jsonb_build_object(
                                'kind', 'invoice', 'entry_id', e.id,
                                'invoice_payment_id', e.metadata->>'invoice_payment_id',
                                'amount', (SELECT sum(po.amount) FROM ledger_postings po
                                           WHERE po.entry_id = e.id AND po.amount > 0))
                            ELSE jsonb_build_object(
                                'kind', 'topup', 'entry_id', e.id,
                                'topup_id', e.metadata->>'topup_id')
                       END ORDER BY e.id) AS parts,
                   min(e.created_at) AS created_at
            FROM payments p
            JOIN ledger_entries e ON e.idempotency_key LIKE 'card-refund:' || p.id || ':%'
            WHERE p.refunded_minor > 0
            GROUP BY 1, 2
        ) applied
        WINDOW w AS (PARTITION BY payment_id ORDER BY total)
        """
    )
    op.add_column('payment_disputes', sa.Column('invoice_disputed', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False))
    op.add_column('invoicing_invoices', sa.Column('disputed', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False))
    op.drop_constraint(op.f('ck_invoicing_invoices_status_known'), 'invoicing_invoices', type_='check')
    op.create_check_constraint(
        op.f('ck_invoicing_invoices_status_known'), 'invoicing_invoices',
        "status IN ('draft', 'finalized', 'paid', 'disputed', 'void')",
    )
    op.drop_constraint(op.f('ck_invoicing_invoices_settlement_non_negative'), 'invoicing_invoices', type_='check')
    op.create_check_constraint(
        op.f('ck_invoicing_invoices_settlement_non_negative'), 'invoicing_invoices',
        'amount_paid >= 0 AND credited >= 0 AND credited_receivable >= 0 AND disputed >= 0',
    )
    run_sql_file("invoicing_disputed.up.sql")
    op.add_column('invoicing_credit_notes', sa.Column('to_bonus', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False))
    op.add_column('invoicing_credit_notes', sa.Column('bonus_lot_id', sa.BigInteger(), nullable=True))
    op.create_foreign_key(op.f('fk_invoicing_credit_notes_bonus_lot_id_wallet_credit_lots'), 'invoicing_credit_notes', 'wallet_credit_lots', ['bonus_lot_id'], ['id'])
    op.create_check_constraint(
        op.f('ck_invoicing_credit_notes_bonus_within_wallet'), 'invoicing_credit_notes',
        'to_bonus >= 0 AND to_bonus <= to_wallet',
    )
    op.add_column('invoicing_credit_note_lines', sa.Column('to_bonus', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False))


def downgrade() -> None:
    op.drop_column('invoicing_credit_note_lines', 'to_bonus')
    op.drop_constraint(op.f('ck_invoicing_credit_notes_bonus_within_wallet'), 'invoicing_credit_notes', type_='check')
    op.drop_constraint(op.f('fk_invoicing_credit_notes_bonus_lot_id_wallet_credit_lots'), 'invoicing_credit_notes', type_='foreignkey')
    op.drop_column('invoicing_credit_notes', 'bonus_lot_id')
    op.drop_column('invoicing_credit_notes', 'to_bonus')
    run_sql_file("invoicing_disputed.down.sql")
    op.drop_constraint(op.f('ck_invoicing_invoices_settlement_non_negative'), 'invoicing_invoices', type_='check')
    op.create_check_constraint(
        op.f('ck_invoicing_invoices_settlement_non_negative'), 'invoicing_invoices',
        'amount_paid >= 0 AND credited >= 0 AND credited_receivable >= 0',
    )
    op.drop_constraint(op.f('ck_invoicing_invoices_status_known'), 'invoicing_invoices', type_='check')
    op.create_check_constraint(
        op.f('ck_invoicing_invoices_status_known'), 'invoicing_invoices',
        "status IN ('draft', 'finalized', 'paid', 'void')",
    )
    op.drop_column('invoicing_invoices', 'disputed')
    op.drop_column('payment_disputes', 'invoice_disputed')
    op.drop_index(op.f('ix_payment_refund_applications_payment_id'), table_name='payment_refund_applications')
    op.drop_table('payment_refund_applications')
    op.drop_index(op.f('ix_payment_refunds_payment_id'), table_name='payment_refunds')
    op.drop_table('payment_refunds')
