"""Gateway authorizations are wallet reservations (no pending ledger entry): lots keep what open
authorizations reserve; multi-capture and incremental authorizations; lock keys in SQL

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 00:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.sqlfile import run_sql_file

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('wallet_credit_lots', sa.Column('reserved', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False))
    op.drop_constraint(op.f('ck_wallet_credit_lots_remaining_in_range'), 'wallet_credit_lots', type_='check')
    op.create_check_constraint(
        op.f('ck_wallet_credit_lots_remaining_in_range'), 'wallet_credit_lots',
        'remaining >= 0 AND reserved >= 0 AND remaining + reserved <= granted',
    )
    op.alter_column('wallet_authorizations', 'model', existing_type=sa.Text(), nullable=True)
    op.add_column('wallet_authorizations', sa.Column('multi_capture', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.add_column('wallet_authorizations', sa.Column('token_grant', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.add_column('wallet_authorizations', sa.Column('requested', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False))
    op.add_column('wallet_authorizations', sa.Column('captured_money', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False))
    op.add_column('wallet_authorizations', sa.Column('captured_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False))
    op.add_column('wallet_authorizations', sa.Column('released_money', sa.Numeric(38, 0), server_default=sa.text('0'), nullable=False))
    op.add_column('wallet_authorizations', sa.Column('released_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False))
    op.add_column('wallet_authorizations', sa.Column('captures', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.add_column('wallet_authorizations', sa.Column('final', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.add_column('wallet_authorizations', sa.Column('reseller_account_id', sa.Text(), nullable=True))
    op.add_column('wallet_authorizations', sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False))
    # spending from a lot and moving a ledger account's counters are HOT updates: no index
    # key or predicate names the columns they change, and pages keep room for new versions
    op.drop_index('ix_wallet_credit_lots_open', table_name='wallet_credit_lots', postgresql_where=sa.text('remaining > 0'))
    op.drop_index('ix_wallet_credit_lots_expiry', table_name='wallet_credit_lots', postgresql_where=sa.text('remaining > 0'))
    op.create_index('ix_wallet_credit_lots_account_kind', 'wallet_credit_lots', ['account_id', 'kind'], unique=False)
    op.create_index('ix_wallet_credit_lots_expiry', 'wallet_credit_lots', ['expires_at'], unique=False, postgresql_where=sa.text('expired_at IS NULL AND expires_at IS NOT NULL'))
    op.execute("ALTER TABLE wallet_credit_lots SET (fillfactor = 80)")
    op.execute("ALTER TABLE ledger_accounts SET (fillfactor = 80)")
    op.execute("ALTER TABLE wallet_accounts SET (fillfactor = 90)")
    op.create_index('ix_ledger_accounts_owner_id', 'ledger_accounts', ['owner_id'], unique=False)
    op.create_index('ix_wallet_authorizations_open_by_account', 'wallet_authorizations', ['account_id'], unique=False, postgresql_where=sa.text("status = 'approved'"))
    op.create_index('ix_wallet_authorizations_open_by_reseller', 'wallet_authorizations', ['reseller_account_id'], unique=False, postgresql_where=sa.text("status = 'approved' AND reseller_account_id IS NOT NULL"))
    op.execute(
        "UPDATE wallet_authorizations a SET reseller_account_id = w.parent_id"
        " FROM wallet_accounts w WHERE w.id = a.account_id AND w.parent_id IS NOT NULL"
    )
    run_sql_file("gateway_reservations.up.sql")
    run_sql_file("ledger_postings_checked.up.sql")


def downgrade() -> None:
    open_ = op.get_bind().scalar(sa.text("SELECT count(*) FROM wallet_authorizations WHERE status = 'approved'"))
    if open_:
        raise RuntimeError(
            f"{open_} authorizations are open; void them (or let them expire) before downgrading"
        )
    run_sql_file("ledger_postings_checked.down.sql")
    run_sql_file("gateway_reservations.down.sql")
    op.drop_index('ix_wallet_authorizations_open_by_reseller', table_name='wallet_authorizations', postgresql_where=sa.text("status = 'approved' AND reseller_account_id IS NOT NULL"))
    op.drop_index('ix_wallet_authorizations_open_by_account', table_name='wallet_authorizations', postgresql_where=sa.text("status = 'approved'"))
    op.drop_index('ix_ledger_accounts_owner_id', table_name='ledger_accounts')
    op.execute("ALTER TABLE wallet_accounts RESET (fillfactor)")
    op.execute("ALTER TABLE ledger_accounts RESET (fillfactor)")
    op.execute("ALTER TABLE wallet_credit_lots RESET (fillfactor)")
    op.drop_index('ix_wallet_credit_lots_expiry', table_name='wallet_credit_lots', postgresql_where=sa.text('expired_at IS NULL AND expires_at IS NOT NULL'))
    op.drop_index('ix_wallet_credit_lots_account_kind', table_name='wallet_credit_lots')
    op.create_index('ix_wallet_credit_lots_expiry', 'wallet_credit_lots', ['expires_at'], unique=False, postgresql_where=sa.text('remaining > 0'))
    op.create_index('ix_wallet_credit_lots_open', 'wallet_credit_lots', ['account_id', 'kind'], unique=False, postgresql_where=sa.text('remaining > 0'))
    for column in ('updated_at', 'reseller_account_id', 'final', 'captures', 'released_tokens', 'released_money', 'captured_tokens', 'captured_money', 'requested', 'token_grant', 'multi_capture'):
        op.drop_column('wallet_authorizations', column)
    op.alter_column('wallet_authorizations', 'model', existing_type=sa.Text(), nullable=False)
    op.drop_constraint(op.f('ck_wallet_credit_lots_remaining_in_range'), 'wallet_credit_lots', type_='check')
    op.create_check_constraint(op.f('ck_wallet_credit_lots_remaining_in_range'), 'wallet_credit_lots', 'remaining >= 0 AND remaining <= granted')
    op.drop_column('wallet_credit_lots', 'reserved')
