"""House cash accounts (cash:bank, cash:collected, cash:stripe...) keep no cached balance: summed
from postings, so bulk top-ups do not queue on one row

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 02:00:00
"""
from collections.abc import Sequence

from migrations.sqlfile import run_sql_file

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    run_sql_file("cash_untracked.up.sql")


def downgrade() -> None:
    run_sql_file("cash_untracked.down.sql")
