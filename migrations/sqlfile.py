"""Run the SQL files in migrations/sql/ (trigger and function bodies) from a revision."""

from __future__ import annotations

from pathlib import Path

from alembic import op

SQL_DIR = Path(__file__).resolve().parent / "sql"


def run_sql_file(name: str) -> None:
    """Execute ``migrations/sql/<name>`` as one script."""
    # exec_driver_sql passes the text through the driver's placeholder parser: escape %.
    op.get_bind().exec_driver_sql((SQL_DIR / name).read_text().replace("%", "%%"))
