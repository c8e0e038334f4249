"""Several HTTP worker processes on one port, balanced by the kernel.

uvicorn's own ``--workers`` shares one listening socket between its processes; a client that
opens its keep-alive connections all at once (a gateway, a benchmark) lands them on whichever
process accepts first, and the others idle. Here every worker binds its own socket with
``SO_REUSEPORT``, so the kernel spreads connections over the processes evenly. The supervising
process restarts a worker that dies, and stops them all on SIGINT or SIGTERM.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from types import FrameType

log = logging.getLogger(__name__)

_RESTART_AFTER_SECONDS = 1.0


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(host: str, port: int) -> None:  # pragma: no cover - runs in a child process
    import uvicorn

    sock = _listen(host, port)
    config = uvicorn.Config("api.asgi:create", factory=True, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def _shut_down(procs: list[BaseProcess]) -> None:
    """Ask every worker to stop (SIGTERM), wait up to 30 s in all, then kill the ones left."""
    for proc in procs:
        if proc.is_alive() and proc.pid is not None:
            proc.terminate()  # uvicorn shuts down gracefully on SIGTERM
    deadline = time.monotonic() + 30
    for proc in procs:
        proc.join(timeout=max(0.1, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()


def supervise(host: str, port: int, workers: int) -> None:
    """Run ``workers`` HTTP processes on ``host:port`` until SIGINT or SIGTERM."""
    ctx = mp.get_context("spawn")
    stopping = False

    def start() -> BaseProcess:
        proc = ctx.Process(target=_worker, args=(host, port), daemon=False)
        proc.start()
        return proc

    def stop(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    procs = [start() for _ in range(workers)]
    try:
        while not stopping:
            time.sleep(0.2)
            for i, proc in enumerate(procs):
                if not proc.is_alive() and not stopping:
                    log.error(
                        "HTTP worker %s exited with %s; starting another", proc.pid, proc.exitcode
                    )
                    time.sleep(_RESTART_AFTER_SECONDS)
                    procs[i] = start()
    finally:
        _shut_down(procs)
        for s, handler in previous.items():
            signal.signal(s, handler)
