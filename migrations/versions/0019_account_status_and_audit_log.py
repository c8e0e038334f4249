"""Account status (active, suspended, closed) and the audit log of admin and finance actions

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-30 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0019'
down_revision: str | None = '0018'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('wallet_accounts', sa.Column('status', sa.Text(), server_default=sa.text("'active'"), nullable=False))
    op.create_check_constraint(op.f('ck_wallet_accounts_status_known'), 'wallet_accounts', "status IN ('active', 'suspended', 'closed')")
    op.create_table(
        'audit_events',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('actor', sa.Text(), nullable=False),
        sa.Column('actor_role', sa.Text(), nullable=True),
        sa.Column('action', sa.Text(), nullable=False),
        sa.Column('target_type', sa.Text(), nullable=True),
        sa.Column('target_id', sa.Text(), nullable=True),
        sa.Column('request_id', sa.Text(), nullable=True),
        sa.Column('changes', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events')),
    )
    op.create_index('ix_audit_events_at', 'audit_events', ['at'], unique=False)
    op.create_index('ix_audit_events_target', 'audit_events', ['target_id'], unique=False)
    op.create_index('ix_audit_events_actor', 'audit_events', ['actor'], unique=False)
    # append-only: the log of who changed what is not itself changeable through the app
    op.execute(
        """
        CREATE FUNCTION tw_audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP
                USING ERRCODE = 'restrict_violation';
        END $$;
        CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
            FOR EACH ROW EXECUTE FUNCTION tw_audit_events_append_only();
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER audit_events_append_only ON audit_events")
    op.execute("DROP FUNCTION tw_audit_events_append_only()")
    op.drop_index('ix_audit_events_actor', table_name='audit_events')
    op.drop_index('ix_audit_events_target', table_name='audit_events')
    op.drop_index('ix_audit_events_at', table_name='audit_events')
    op.drop_table('audit_events')
    op.drop_constraint(op.f('ck_wallet_accounts_status_known'), 'wallet_accounts', type_='check')
    op.drop_column('wallet_accounts', 'status')
