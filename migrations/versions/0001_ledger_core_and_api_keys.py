"""Ledger core (accounts, entries, postings and their invariants), API keys, idempotency

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 06:41:49.042739
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations.sqlfile import run_sql_file

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('secret_hash', sa.Text(), nullable=False),
    sa.Column('prefix', sa.Text(), nullable=False),
    sa.Column('role', sa.Text(), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=True),
    sa.Column('description', sa.Text(), server_default=sa.text("''"), nullable=False),
    sa.Column('created_by', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("role IN ('admin','finance','gateway','reseller','customer')", name=op.f('ck_api_keys_role_known')),
    sa.CheckConstraint("role NOT IN ('reseller','customer') OR account_id IS NOT NULL", name=op.f('ck_api_keys_scoped_roles_have_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('secret_hash', name=op.f('uq_api_keys_secret_hash'))
    )
    op.create_table('idempotency_records',
    sa.Column('principal', sa.Text(), nullable=False),
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('method', sa.Text(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('request_hash', sa.Text(), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('response_body', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('principal', 'key', name=op.f('pk_idempotency_records'))
    )
    op.create_index(op.f('ix_idempotency_records_created_at'), 'idempotency_records', ['created_at'], unique=False)
    op.create_table('ledger_accounts',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('code', sa.Text(), nullable=False),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('unit', sa.Text(), nullable=False),
    sa.Column('book', sa.Text(), server_default=sa.text("'operator'"), nullable=False),
    sa.Column('owner_id', sa.Text(), nullable=True),
    sa.Column('forbid_negative', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('track_balance', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('debits_posted', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False),
    sa.Column('credits_posted', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False),
    sa.Column('debits_pending', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False),
    sa.Column('credits_pending', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False),
    sa.Column('version', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("NOT forbid_negative OR CASE WHEN type IN ('asset', 'expense', 'contra_revenue') THEN debits_posted - credits_posted - credits_pending >= 0 ELSE credits_posted - debits_posted - debits_pending >= 0 END", name=op.f('ck_ledger_accounts_no_negative_balance')),
    sa.CheckConstraint("type IN ('asset','liability','equity','revenue','contra_revenue','expense')", name=op.f('ck_ledger_accounts_type_known')),
    sa.CheckConstraint('debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0 AND credits_pending >= 0', name=op.f('ck_ledger_accounts_counters_non_negative')),
    sa.CheckConstraint('track_balance OR NOT forbid_negative', name=op.f('ck_ledger_accounts_forbid_negative_tracked')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_accounts')),
    sa.UniqueConstraint('book', 'unit', 'code', 'owner_id', name='uq_ledger_accounts_identity', postgresql_nulls_not_distinct=True),
    sa.UniqueConstraint('id', 'unit', 'book', name='uq_ledger_accounts_id_unit_book')
    )
    op.create_table('ledger_entries',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('idempotency_key', sa.Text(), nullable=True),
    sa.Column('description', sa.Text(), server_default=sa.text("''"), nullable=False),
    sa.Column('hold_id', sa.BigInteger(), nullable=True),
    sa.Column('hold_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reverses_entry_id', sa.BigInteger(), nullable=True),
    sa.Column('effective_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.CheckConstraint("(kind = 'hold') = (hold_expires_at IS NOT NULL)", name=op.f('ck_ledger_entries_hold_expiry')),
    sa.CheckConstraint("(kind = 'reversal') = (reverses_entry_id IS NOT NULL)", name=op.f('ck_ledger_entries_reversal')),
    sa.CheckConstraint("(kind IN ('hold_post','hold_void','hold_expire')) = (hold_id IS NOT NULL)", name=op.f('ck_ledger_entries_resolution_names_hold')),
    sa.CheckConstraint("kind IN ('standard','hold','hold_post','hold_void','hold_expire','reversal')", name=op.f('ck_ledger_entries_kind_known')),
    sa.ForeignKeyConstraint(['hold_id'], ['ledger_entries.id'], name=op.f('fk_ledger_entries_hold_id_ledger_entries')),
    sa.ForeignKeyConstraint(['reverses_entry_id'], ['ledger_entries.id'], name=op.f('fk_ledger_entries_reverses_entry_id_ledger_entries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_entries')),
    sa.UniqueConstraint('hold_id', name=op.f('uq_ledger_entries_hold_id')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_ledger_entries_idempotency_key')),
    sa.UniqueConstraint('reverses_entry_id', name=op.f('uq_ledger_entries_reverses_entry_id'))
    )
    op.create_index('ix_ledger_entries_open_holds', 'ledger_entries', ['hold_expires_at'], unique=False, postgresql_where=sa.text("kind = 'hold'"))
    op.create_table('ledger_postings',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('entry_id', sa.BigInteger(), nullable=False),
    sa.Column('account_id', sa.BigInteger(), nullable=False),
    sa.Column('unit', sa.Text(), nullable=False),
    sa.Column('book', sa.Text(), nullable=False),
    sa.Column('amount', sa.Numeric(38, 0), nullable=False),
    sa.Column('phase', sa.SmallInteger(), server_default=sa.text('0'), nullable=False),
    sa.CheckConstraint('amount <> 0', name=op.f('ck_ledger_postings_amount_nonzero')),
    sa.CheckConstraint('phase IN (0, 1, 2)', name=op.f('ck_ledger_postings_phase_known')),
    sa.ForeignKeyConstraint(['account_id', 'unit', 'book'], ['ledger_accounts.id', 'ledger_accounts.unit', 'ledger_accounts.book'], name='fk_ledger_postings_account'),
    sa.ForeignKeyConstraint(['entry_id'], ['ledger_entries.id'], name=op.f('fk_ledger_postings_entry_id_ledger_entries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_postings'))
    )
    op.create_index('ix_ledger_postings_account_entry', 'ledger_postings', ['account_id', 'entry_id'], unique=False)
    op.create_index(op.f('ix_ledger_postings_entry_id'), 'ledger_postings', ['entry_id'], unique=False)
    run_sql_file("ledger_invariants.up.sql")


def downgrade() -> None:
    run_sql_file("ledger_invariants.down.sql")
    op.drop_index(op.f('ix_ledger_postings_entry_id'), table_name='ledger_postings')
    op.drop_index('ix_ledger_postings_account_entry', table_name='ledger_postings')
    op.drop_table('ledger_postings')
    op.drop_index('ix_ledger_entries_open_holds', table_name='ledger_entries', postgresql_where=sa.text("kind = 'hold'"))
    op.drop_table('ledger_entries')
    op.drop_table('ledger_accounts')
    op.drop_index(op.f('ix_idempotency_records_created_at'), table_name='idempotency_records')
    op.drop_table('idempotency_records')
    op.drop_table('api_keys')
