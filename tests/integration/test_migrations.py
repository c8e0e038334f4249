"""Migrations: one head, the schema matches the models, and down/up round-trips."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from api.db import alembic_config, check, upgrade


def test_single_head_and_models_match_schema(database_url):
    cfg = alembic_config(database_url)
    assert len(ScriptDirectory.from_config(cfg).get_heads()) == 1
    check(database_url)  # raises if alembic check finds differences


def test_downgrade_to_base_and_upgrade_again(database_url):
    cfg = alembic_config(database_url)
    command.downgrade(cfg, "base")
    eng = sa.create_engine(database_url)
    with eng.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    assert "ledger_postings" not in tables
    upgrade(database_url)
    with eng.connect() as conn:
        triggers = set(
            conn.scalars(sa.text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")).all()
        )
    eng.dispose()
    assert {
        "ledger_entries_checked",
        "ledger_postings_apply",
        "ledger_accounts_guard",
    } <= triggers
