"""Invoicing: tax and billing profiles, billing periods, invoices and lines, gapless number
series, credit notes, invoice payments; usage records gain the reseller's wholesale split and an
(account, received_at) index for the close's cut-off

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 23:38:53.759689
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('invoicing_billing_periods',
    sa.Column('period', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('accounts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('invoices', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.CheckConstraint("status IN ('closing', 'closed')", name=op.f('ck_invoicing_billing_periods_status_known')),
    sa.PrimaryKeyConstraint('period', name=op.f('pk_invoicing_billing_periods'))
    )
    op.create_table('invoicing_number_series',
    sa.Column('series', sa.Text(), nullable=False),
    sa.Column('last_value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('series', name=op.f('pk_invoicing_number_series'))
    )
    op.create_table('invoicing_tax_profiles',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('rate_pct', sa.Numeric(precision=7, scale=4), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('rate_pct >= 0 AND rate_pct <= 100', name=op.f('ck_invoicing_tax_profiles_rate_in_range')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invoicing_tax_profiles'))
    )
    op.create_table('invoicing_billing_profiles',
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('net_terms_days', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('tax_profile_id', sa.Text(), nullable=True),
    sa.Column('legal_name', sa.Text(), nullable=True),
    sa.Column('billing_address', sa.Text(), nullable=True),
    sa.Column('tax_id', sa.Text(), nullable=True),
    sa.Column('billing_email', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('net_terms_days IN (0, 30, 60, 90)', name=op.f('ck_invoicing_billing_profiles_net_terms_known')),
    sa.ForeignKeyConstraint(['account_id'], ['wallet_accounts.id'], name=op.f('fk_invoicing_billing_profiles_account_id_wallet_accounts')),
    sa.ForeignKeyConstraint(['tax_profile_id'], ['invoicing_tax_profiles.id'], name=op.f('fk_invoicing_billing_profiles_tax_profile_id_invoicing_tax_profiles')),
    sa.PrimaryKeyConstraint('account_id', name=op.f('pk_invoicing_billing_profiles'))
    )
    op.create_table('invoicing_invoices',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('period', sa.Text(), nullable=False),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('period_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('number', sa.Text(), nullable=True),
    sa.Column('series', sa.Text(), nullable=True),
    sa.Column('sequence', sa.BigInteger(), nullable=True),
    sa.Column('usage_cutoff_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('previous_cutoff_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('bill_to', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('net_terms_days', sa.Integer(), nullable=False),
    sa.Column('tax_profile_id', sa.Text(), nullable=True),
    sa.Column('tax_rate_pct', sa.Numeric(precision=7, scale=4), nullable=True),
    sa.Column('subtotal', sa.Numeric(38, 0), nullable=False),
    sa.Column('tax', sa.Numeric(38, 0), nullable=False),
    sa.Column('total', sa.Numeric(38, 0), nullable=False),
    sa.Column('prepaid_applied', sa.Numeric(38, 0), nullable=False),
    sa.Column('amount_due', sa.Numeric(38, 0), nullable=False),
    sa.Column('exact_due', sa.Numeric(38, 0), nullable=False),
    sa.Column('rounding', sa.Numeric(38, 0), nullable=False),
    sa.Column('amount_paid', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False),
    sa.Column('credited', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False),
    sa.Column('credited_receivable', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('due_date', sa.Date(), nullable=True),
    sa.Column('finalize_entry_id', sa.BigInteger(), nullable=True),
    sa.Column('paid_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('voided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('void_entry_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("(status = 'draft') = (number IS NULL)", name=op.f('ck_invoicing_invoices_numbered_when_final')),
    sa.CheckConstraint("status IN ('draft', 'finalized', 'paid', 'void')", name=op.f('ck_invoicing_invoices_status_known')),
    sa.CheckConstraint('amount_paid + credited_receivable <= amount_due', name=op.f('ck_invoicing_invoices_not_overpaid')),
    sa.CheckConstraint('amount_paid >= 0 AND credited >= 0 AND credited_receivable >= 0', name=op.f('ck_invoicing_invoices_settlement_non_negative')),
    sa.ForeignKeyConstraint(['account_id'], ['wallet_accounts.id'], name=op.f('fk_invoicing_invoices_account_id_wallet_accounts')),
    sa.ForeignKeyConstraint(['finalize_entry_id'], ['ledger_entries.id'], name=op.f('fk_invoicing_invoices_finalize_entry_id_ledger_entries')),
    sa.ForeignKeyConstraint(['void_entry_id'], ['ledger_entries.id'], name=op.f('fk_invoicing_invoices_void_entry_id_ledger_entries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invoicing_invoices')),
    sa.UniqueConstraint('account_id', 'period', name='uq_invoicing_invoices_account_period'),
    sa.UniqueConstraint('number', name=op.f('uq_invoicing_invoices_number'))
    )
    op.create_index(op.f('ix_invoicing_invoices_account_id'), 'invoicing_invoices', ['account_id'], unique=False)
    op.create_index('ix_invoicing_invoices_open', 'invoicing_invoices', ['due_date'], unique=False, postgresql_where=sa.text("status = 'finalized'"))
    op.create_index('ix_invoicing_invoices_period', 'invoicing_invoices', ['period'], unique=False)
    op.create_table('invoicing_credit_notes',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('number', sa.Text(), nullable=False),
    sa.Column('series', sa.Text(), nullable=False),
    sa.Column('sequence', sa.BigInteger(), nullable=False),
    sa.Column('invoice_id', sa.Text(), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('net', sa.Numeric(38, 0), nullable=False),
    sa.Column('tax', sa.Numeric(38, 0), nullable=False),
    sa.Column('total', sa.Numeric(38, 0), nullable=False),
    sa.Column('to_receivable', sa.Numeric(38, 0), nullable=False),
    sa.Column('to_wallet', sa.Numeric(38, 0), nullable=False),
    sa.Column('entry_id', sa.BigInteger(), nullable=False),
    sa.Column('lot_id', sa.BigInteger(), nullable=True),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('net > 0 AND tax >= 0', name=op.f('ck_invoicing_credit_notes_positive')),
    sa.CheckConstraint('total = net + tax', name=op.f('ck_invoicing_credit_notes_total_adds_up')),
    sa.CheckConstraint('total = to_receivable + to_wallet', name=op.f('ck_invoicing_credit_notes_total_split')),
    sa.ForeignKeyConstraint(['account_id'], ['wallet_accounts.id'], name=op.f('fk_invoicing_credit_notes_account_id_wallet_accounts')),
    sa.ForeignKeyConstraint(['entry_id'], ['ledger_entries.id'], name=op.f('fk_invoicing_credit_notes_entry_id_ledger_entries')),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoicing_invoices.id'], name=op.f('fk_invoicing_credit_notes_invoice_id_invoicing_invoices')),
    sa.ForeignKeyConstraint(['lot_id'], ['wallet_credit_lots.id'], name=op.f('fk_invoicing_credit_notes_lot_id_wallet_credit_lots')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invoicing_credit_notes')),
    sa.UniqueConstraint('number', name=op.f('uq_invoicing_credit_notes_number'))
    )
    op.create_index(op.f('ix_invoicing_credit_notes_invoice_id'), 'invoicing_credit_notes', ['invoice_id'], unique=False)
    op.create_table('invoicing_invoice_lines',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('invoice_id', sa.Text(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('model', sa.Text(), nullable=True),
    sa.Column('source_period', sa.Text(), nullable=True),
    sa.Column('requests', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('settlement', sa.Text(), nullable=False),
    sa.Column('amount_exact', sa.Numeric(38, 0), nullable=False),
    sa.Column('amount', sa.Numeric(38, 0), nullable=False),
    sa.Column('tax_rate_pct', sa.Numeric(precision=7, scale=4), nullable=True),
    sa.Column('tax', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False),
    sa.Column('source_type', sa.Text(), nullable=True),
    sa.Column('source_id', sa.Text(), nullable=True),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.CheckConstraint("settlement IN ('due', 'prepaid', 'info')", name=op.f('ck_invoicing_invoice_lines_settlement_known')),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoicing_invoices.id'], name=op.f('fk_invoicing_invoice_lines_invoice_id_invoicing_invoices')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invoicing_invoice_lines')),
    sa.UniqueConstraint('invoice_id', 'position', name='uq_invoicing_invoice_lines_position')
    )
    op.create_index(op.f('ix_invoicing_invoice_lines_invoice_id'), 'invoicing_invoice_lines', ['invoice_id'], unique=False)
    op.create_index('uq_invoicing_invoice_lines_source', 'invoicing_invoice_lines', ['source_type', 'source_id'], unique=True, postgresql_where=sa.text('source_id IS NOT NULL'))
    op.create_table('invoicing_payments',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('invoice_id', sa.Text(), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('amount', sa.Numeric(38, 0), nullable=False),
    sa.Column('method', sa.Text(), nullable=False),
    sa.Column('reference', sa.Text(), nullable=False),
    sa.Column('entry_id', sa.BigInteger(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('amount > 0', name=op.f('ck_invoicing_payments_positive')),
    sa.ForeignKeyConstraint(['account_id'], ['wallet_accounts.id'], name=op.f('fk_invoicing_payments_account_id_wallet_accounts')),
    sa.ForeignKeyConstraint(['entry_id'], ['ledger_entries.id'], name=op.f('fk_invoicing_payments_entry_id_ledger_entries')),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoicing_invoices.id'], name=op.f('fk_invoicing_payments_invoice_id_invoicing_invoices')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invoicing_payments')),
    sa.UniqueConstraint('method', 'reference', name='uq_invoicing_payments_reference')
    )
    op.create_index(op.f('ix_invoicing_payments_invoice_id'), 'invoicing_payments', ['invoice_id'], unique=False)
    op.create_table('invoicing_credit_note_lines',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('credit_note_id', sa.Text(), nullable=False),
    sa.Column('invoice_line_id', sa.BigInteger(), nullable=True),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('settlement', sa.Text(), nullable=False),
    sa.Column('net', sa.Numeric(38, 0), nullable=False),
    sa.Column('tax', sa.Numeric(38, 0), nullable=False),
    sa.CheckConstraint('net > 0 AND tax >= 0', name=op.f('ck_invoicing_credit_note_lines_positive')),
    sa.ForeignKeyConstraint(['credit_note_id'], ['invoicing_credit_notes.id'], name=op.f('fk_invoicing_credit_note_lines_credit_note_id_invoicing_credit_notes')),
    sa.ForeignKeyConstraint(['invoice_line_id'], ['invoicing_invoice_lines.id'], name=op.f('fk_invoicing_credit_note_lines_invoice_line_id_invoicing_invoice_lines')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invoicing_credit_note_lines'))
    )
    op.create_index(op.f('ix_invoicing_credit_note_lines_credit_note_id'), 'invoicing_credit_note_lines', ['credit_note_id'], unique=False)
    op.create_index(op.f('ix_invoicing_credit_note_lines_invoice_line_id'), 'invoicing_credit_note_lines', ['invoice_line_id'], unique=False)
    op.add_column('wallet_usage_records', sa.Column('wholesale_drawn', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column('wallet_usage_records', sa.Column('wholesale_credited', sa.Numeric(38, 0), nullable=True))
    op.create_index('ix_wallet_usage_records_account_received', 'wallet_usage_records', ['account_id', 'received_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_wallet_usage_records_account_received', table_name='wallet_usage_records')
    op.drop_column('wallet_usage_records', 'wholesale_credited')
    op.drop_column('wallet_usage_records', 'wholesale_drawn')
    op.drop_index(op.f('ix_invoicing_credit_note_lines_invoice_line_id'), table_name='invoicing_credit_note_lines')
    op.drop_index(op.f('ix_invoicing_credit_note_lines_credit_note_id'), table_name='invoicing_credit_note_lines')
    op.drop_table('invoicing_credit_note_lines')
    op.drop_index(op.f('ix_invoicing_payments_invoice_id'), table_name='invoicing_payments')
    op.drop_table('invoicing_payments')
    op.drop_index('uq_invoicing_invoice_lines_source', table_name='invoicing_invoice_lines', postgresql_where=sa.text('source_id IS NOT NULL'))
    op.drop_index(op.f('ix_invoicing_invoice_lines_invoice_id'), table_name='invoicing_invoice_lines')
    op.drop_table('invoicing_invoice_lines')
    op.drop_index(op.f('ix_invoicing_credit_notes_invoice_id'), table_name='invoicing_credit_notes')
    op.drop_table('invoicing_credit_notes')
    op.drop_index('ix_invoicing_invoices_period', table_name='invoicing_invoices')
    op.drop_index('ix_invoicing_invoices_open', table_name='invoicing_invoices', postgresql_where=sa.text("status = 'finalized'"))
    op.drop_index(op.f('ix_invoicing_invoices_account_id'), table_name='invoicing_invoices')
    op.drop_table('invoicing_invoices')
    op.drop_table('invoicing_billing_profiles')
    op.drop_table('invoicing_tax_profiles')
    op.drop_table('invoicing_number_series')
    op.drop_table('invoicing_billing_periods')
