"""Logging of the server and the CLI.

One format, the access log as bare JSON lines, and the chatty libraries kept at warnings.
"""

from __future__ import annotations

import logging
import sys

#: libraries that log at INFO/DEBUG on every call: PDF rendering (fontTools subsets every font,
#: WeasyPrint reports each stylesheet step), the scheduler's per-run lines (api/scheduler.py)
NOISY_LOGGERS = ("fontTools", "weasyprint", "apscheduler.executors", "apscheduler.scheduler")


def quiet_noisy_loggers() -> None:
    """Keep only warnings and errors of libraries that log routine work."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a line is logged.

    Not the stream of when it was made, which test runners close.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure_logging(level: str, *, access_log: bool = True) -> None:
    """Root logging at ``level`` with timestamps.

    The access log (``tokenwallet.access``) as bare JSON lines on stderr whatever ``level`` is (off
    with ``access_log=False``); noisy libraries at warnings.
    """
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    access = logging.getLogger("tokenwallet.access")
    if not access.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.propagate = False
    access.setLevel(logging.INFO if access_log else logging.WARNING)
    quiet_noisy_loggers()
