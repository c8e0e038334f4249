"""Group commit for the gateway hot path.

Concurrent authorize, increment, void and usage calls of one process are queued and run
together: a worker thread takes everything queued (up to a limit), runs it as one
:func:`wallet.gateway.execute` in one transaction (two round trips and a commit for the whole
group) and hands each call its own result. When the process is idle a call runs alone at once;
under load the groups grow by themselves, so the database does a fraction of the work per call.

If a group fails as a whole (a deadlock, a lock timeout, a constraint), it is rolled back and
each call is run again alone, so one call's failure never becomes another's. A call whose
transaction failed answers with the error of its own run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from api.db import CommitOutcomeUnknown, commit
from api.metrics import observe, observe_failure
from wallet.gateway import Operation, OperationResult, execute

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Call:
    op: Operation
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    records: int


def _size(op: Operation) -> int:
    return len(getattr(op, "records", ())) or 1


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Batcher:
    """Runs gateway operations in groups, one transaction per group.

    Args:
        factory: sessions on the service database.
        threads: groups in flight at once (each holds one connection while it runs).
        max_calls: most calls in one group.
        max_records: most usage records in one group (a 1,000-record batch runs alone).
        clock: "now" for the operations (tests drive time with it); None: the database clock.
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        threads: int = 4,
        max_calls: int = 256,
        max_records: int = 2000,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Set up an idle batcher; its threads start with the first call (see the class)."""
        self._factory = factory
        self._threads = threads
        self._max_calls = max_calls
        self._max_records = max_records
        self._clock = clock
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopped = False
        self.groups = 0
        self.calls = 0

    def _start(self) -> None:
        with self._lock:
            if self._workers or self._stopped:
                return
            for n in range(self._threads):
                t = threading.Thread(target=self._work, name=f"gateway-batcher-{n}", daemon=True)
                t.start()
                self._workers.append(t)

    def stop(self) -> None:
        """Finish what is queued and stop the workers."""
        with self._lock:
            self._stopped = True
            workers, self._workers = self._workers, []
        for _ in workers:
            self._queue.put(None)
        for t in workers:
            t.join(timeout=10)

    async def run(self, op: Operation) -> OperationResult:
        """Queue one operation and wait for its result.

        A domain error is returned, not raised; a failed transaction raises.
        """
        if not self._workers:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Call(op, future, loop, _size(op)))
        result: OperationResult = await future
        return result

    def _take(self, first: _Call) -> tuple[list[_Call], bool]:
        group, records = [first], first.records
        while len(group) < self._max_calls and records < self._max_records:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                return group, True
            group.append(nxt)
            records += nxt.records
        return group, False

    def _work(self) -> None:
        worker = _Worker(self._factory)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                group, stop = self._take(first)
                try:
                    self._run(worker, group)
                except Exception:  # never let a worker die
                    log.exception("gateway batch failed unexpectedly")
                if stop:
                    return
        finally:
            worker.close()

    def _run(self, worker: _Worker, group: list[_Call]) -> None:
        self.groups += 1
        self.calls += len(group)
        ops = [c.op for c in group]
        try:
            results = worker.run(ops, self._clock() if self._clock else None)
        except CommitOutcomeUnknown as exc:
            for c in group:  # retrying could apply them twice: the caller replays safely
                observe_failure(c.op, exc)
                c.loop.call_soon_threadsafe(_settle, c.future, None, exc)
            return
        except Exception as exc:
            if len(group) == 1:
                c = group[0]
                observe_failure(c.op, exc)
                c.loop.call_soon_threadsafe(_settle, c.future, None, exc)
                return
            log.info("a group of %d gateway calls failed (%s); running each alone", len(group), exc)
            for c in group:
                self._run(worker, [c])
            return
        for c, result in zip(group, results, strict=True):
            c.loop.call_soon_threadsafe(_settle, c.future, result, None)
        observe(ops, results)


class _Worker:
    """One worker's database connection, kept between groups and replaced after any failure.

    No pool checkout or ping per group.
    """

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory
        self._connection: Connection | None = None

    def run(self, ops: list[Operation], now: datetime | None) -> list[OperationResult]:
        if self._connection is None:
            bind = self._factory.kw["bind"]
            self._connection = bind.connect()
        session = self._factory(bind=self._connection)
        try:
            results = execute(session, ops, now=now)
            commit(session)
            return results
        except Exception:
            self.close()
            raise
        finally:
            session.close()

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.invalidate()
                self._connection.close()
            self._connection = None
