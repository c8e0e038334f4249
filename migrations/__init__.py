"""Alembic migrations of the whole schema: the environment, the versions and their SQL files."""
