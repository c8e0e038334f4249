"""The app factory for multi-process serving (``tokenwallet serve --workers N``).

Each worker process builds its own engine and app from the settings (``DATABASE_URL`` is set by
``serve``).
"""

from __future__ import annotations

from litestar import Litestar

from api.app import create_app, tune_gc
from api.db import make_engine, resolve_database_url
from api.logs import configure_logging
from api.settings import get_settings


def create() -> Litestar:
    """A worker's app, without the scheduler (the supervising process runs the jobs)."""
    settings = get_settings()
    configure_logging(settings.tokenwallet_log_level, access_log=settings.tokenwallet_access_log)
    engine = make_engine(
        resolve_database_url(settings), pool_size=settings.tokenwallet_db_pool_size
    )
    app = create_app(engine, settings=settings, scheduler=False)
    tune_gc()
    return app
