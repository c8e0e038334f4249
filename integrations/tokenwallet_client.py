"""The gateway's client for tokenwallet: batched exactly-once usage and local credit control.

An LLM gateway calls tokenwallet twice per request in the naive design (authorize before,
report usage after). This client makes both cheap:

Usage reports (``report``) go into a bounded in-memory queue. One background thread sends them
to ``POST /v1/usage`` in batches (every ``flush_interval_s``, or as soon as ``max_batch`` are
waiting). Every record carries a client-chosen ``id`` fixed when it is queued; the server
stores the id in the same transaction as the charge and answers a replay with ``duplicate``
and the first result. So any failure whose outcome is unknown (connection drop, timeout, 429,
5xx with ``Retry-After``) is handled by sending the very same batch again, with exponential
backoff and jitter: a record is charged exactly once however often it travels. A record the
server reports ``in_progress`` (a concurrent request is charging the same id, e.g. our own
timed-out first attempt) is sent again a little later. Every record ends in exactly one final
result (``charged``, ``duplicate`` or ``rejected`` with a reason), handed to ``on_result`` and
counted in :meth:`TokenwalletClient.stats`. Nothing is dropped silently: a full queue makes
``report`` raise :class:`QueueFull`, and ``close`` raises :class:`FlushTimeout` with the
records it could not deliver.

Credit control (:class:`~integrations.grant.Grant`) follows RFC 4006 online charging: the
gateway asks for a multi-capture authorization (Requested-Service-Unit), is granted an amount
(Granted-Service-Unit), spends it locally across many calls without a round trip, reports the
usage that names the grant (Used-Service-Unit) through the same batching queue, and asks for
more (an increment) before it runs out. The server's answers are authoritative; the grant
adopts them, minus what was spent locally and not acknowledged yet. When the server says the
account can give no more (``final``) and the local remainder is spent, ``try_spend`` says no:
the prepaid hard stop, decided locally in microseconds.
"""

from __future__ import annotations

import collections
import heapq
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import httpx

from integrations.grant import Grant
from integrations.wire import (
    TokenwalletError,
    TokenwalletUnavailable,
    UsageResult,
    dumps,
    loads,
    plain,
)

__all__ = [
    "ClientClosed",
    "ClientStats",
    "FlushTimeout",
    "QueueFull",
    "TokenwalletClient",
]

log = logging.getLogger("integrations.tokenwallet")

#: HTTP statuses whose outcome is unknown or transient: the same request is sent again.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Rejection reasons that are not final: the record is sent again later.
RETRYABLE_REASONS = frozenset({"in_progress"})

ResultCallback = Callable[[dict[str, Any], UsageResult], None]


class QueueFull(Exception):
    """``report`` was called while ``max_queue`` records are still unacknowledged."""


class ClientClosed(RuntimeError):
    """The client was closed; it takes no more records."""


class FlushTimeout(TimeoutError):
    """Records were still unacknowledged when the timeout passed.

    Attributes:
        pending: copies of the records not acknowledged yet (persist them to send them later:
            their ids make that safe).
    """

    def __init__(self, pending: list[dict[str, Any]]) -> None:
        """Keep the unacknowledged records on the exception; the message counts them."""
        super().__init__(f"{len(pending)} usage record(s) not acknowledged yet")
        self.pending = pending


@dataclass(slots=True)
class ClientStats:
    """Counters since the client started.

    Attributes:
        reported: records accepted by ``report`` (and ``Grant.settle``).
        requests: ``POST /v1/usage`` attempts.
        sent: record transmissions (a record sent twice counts twice).
        charged: final results ``charged``.
        duplicate: final results ``duplicate`` (charged by an earlier attempt).
        rejected: final rejections by reason code.
        retries: batch attempts repeated after an unknown or transient outcome.
        in_progress: ``in_progress`` answers (those records were sent again later).
        pending: records not acknowledged yet.
    """

    reported: int = 0
    requests: int = 0
    sent: int = 0
    charged: int = 0
    duplicate: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    in_progress: int = 0
    pending: int = 0


class _Sink(Protocol):
    """Who wants the results of records it queued (a :class:`Grant`)."""

    def usage_result(self, result: UsageResult) -> None: ...

    def batch_done(self) -> None: ...


@dataclass(slots=True)
class _Item:
    seq: int
    record: dict[str, Any]
    queued_at: float
    sink: _Sink | None


class TokenwalletClient:
    """Talks to tokenwallet for an LLM gateway; safe to share between threads.

    Args:
        base_url: the server, e.g. ``https://billing.example.com``.
        api_key: a ``gateway`` API key.
        max_batch: records per ``POST /v1/usage`` (1 to 1000).
        flush_interval_s: the longest a record waits in the queue before it is sent.
        max_queue: unacknowledged records allowed before ``report`` raises :class:`QueueFull`.
        timeout_s: HTTP timeout of one request.
        retry_max_s: how long a synchronous call (grant, increment, void) keeps retrying
            before it raises :class:`TokenwalletUnavailable`. Usage batches are retried until
            they are acknowledged or the client is closed.
        transport: an ``httpx`` transport (tests pass ``httpx.MockTransport``).
        on_result: called with ``(record, result)`` once per record, on the sender thread;
            it must be quick and must not call ``flush``.
        backoff_base_s: the first retry delay; it doubles per attempt, with jitter.
        backoff_max_s: the longest retry delay (``Retry-After`` is honoured up to this).
        in_progress_delay_s: how long an ``in_progress`` record waits before it is re-sent.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        max_batch: int = 500,
        flush_interval_s: float = 0.2,
        max_queue: int = 100_000,
        timeout_s: float = 10,
        retry_max_s: float = 30,
        transport: httpx.BaseTransport | None = None,
        on_result: ResultCallback | None = None,
        backoff_base_s: float = 0.05,
        backoff_max_s: float = 5.0,
        in_progress_delay_s: float = 0.2,
    ) -> None:
        """Check the limits, open the HTTP client and start the sender thread (args above)."""
        if not 1 <= max_batch <= 1000:
            raise ValueError("max_batch must be between 1 and 1000")
        if max_queue < 1:
            raise ValueError("max_queue must be positive")
        self.retry_max_s = retry_max_s
        self._max_batch = max_batch
        self._interval = flush_interval_s
        self._max_queue = max_queue
        self._on_result = on_result
        self._backoff_base = backoff_base_s
        self._backoff_max = backoff_max_s
        self._in_progress_delay = in_progress_delay_s
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=timeout_s,
            transport=transport,
        )
        self._cond = threading.Condition()
        self._queue: collections.deque[_Item] = collections.deque()
        self._delayed: list[tuple[float, int, _Item]] = []  # heap by when to re-send
        self._outstanding: collections.OrderedDict[int, _Item] = collections.OrderedDict()
        self._seq = 0
        self._flushers = 0
        self._closing = False
        self._closed = False
        self._stop = threading.Event()
        self._stats = ClientStats()
        self._executor: ThreadPoolExecutor | None = None
        self._sender = threading.Thread(target=self._run, name="tokenwallet-usage", daemon=True)
        self._sender.start()

    # -- usage ----------------------------------------------------------------------------------

    def report(self, record: Mapping[str, Any]) -> str:
        """Queue a usage record; it is sent in the next batch.

        Args:
            record: a UsageRecord (``account_id``, ``model``, token counts, ...). ``id`` is
                generated (uuid4) when missing and ``occurred_at`` set to now (UTC); a
                ``datetime`` is sent as RFC 3339 and a ``Decimal`` as a decimal string.

        Returns:
            The record's id (the exactly-once key).

        Raises:
            QueueFull: ``max_queue`` records are unacknowledged; nothing was queued.
            ClientClosed: the client is closing or closed.
            TypeError: a ``float`` or a naive datetime in the record.
        """
        return self._enqueue(record, None)

    def _enqueue(self, record: Mapping[str, Any], sink: _Sink | None) -> str:
        rec: dict[str, Any] = plain(dict(record))
        rec["id"] = str(rec.get("id") or uuid.uuid4())
        if not rec.get("occurred_at"):
            rec["occurred_at"] = datetime.now(UTC).isoformat()
        with self._cond:
            if self._closing:
                raise ClientClosed("the tokenwallet client is closed")
            if len(self._outstanding) >= self._max_queue:
                raise QueueFull(
                    f"{len(self._outstanding)} usage records are not acknowledged yet"
                    f" (max_queue={self._max_queue}); is the server reachable?"
                )
            self._seq += 1
            item = _Item(self._seq, rec, time.monotonic(), sink)
            self._outstanding[item.seq] = item
            self._queue.append(item)
            self._stats.reported += 1
            if len(self._queue) == 1 or len(self._queue) >= self._max_batch:
                self._cond.notify_all()
        return str(rec["id"])

    def flush(self, timeout: float | None = None) -> None:
        """Block until every record queued before this call has its final result.

        Args:
            timeout: seconds to wait at most (``None``: as long as it takes).

        Raises:
            FlushTimeout: some records are still unacknowledged after ``timeout``.
            RuntimeError: called from the sender thread (an ``on_result`` callback).
        """
        if threading.current_thread() is self._sender:
            raise RuntimeError("flush() cannot be called from an on_result callback")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._seq
            self._flushers += 1
            self._cond.notify_all()
            try:
                while self._outstanding and next(iter(self._outstanding)) <= target:
                    left = None if deadline is None else deadline - time.monotonic()
                    if (left is not None and left <= 0) or not self._sender.is_alive():
                        raise FlushTimeout([dict(i.record) for i in self._outstanding.values()])
                    self._cond.wait(left)
            finally:
                self._flushers -= 1

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the sender thread and close connections (idempotent).

        Args:
            timeout: seconds to wait for the flush (``None``: as long as it takes).

        Raises:
            FlushTimeout: records could not be delivered in time (listed on the exception);
                the client is closed all the same.
        """
        with self._cond:
            if self._closed:
                return
            self._closing = True
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            self._stop.set()
            with self._cond:
                self._cond.notify_all()
            self._sender.join()
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
            self._http.close()

    def __enter__(self) -> TokenwalletClient:
        """Use the client in a ``with`` block; it is closed (flushed) on the way out."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the client, flushing what is queued."""
        self.close()

    def stats(self) -> ClientStats:
        """A snapshot of the counters."""
        with self._cond:
            return replace(
                self._stats, rejected=dict(self._stats.rejected), pending=len(self._outstanding)
            )

    # -- credit control --------------------------------------------------------------------------

    def grant(
        self,
        account_id: str,
        *,
        amount: Decimal | str | int | None = None,
        tokens: int | None = None,
        model: str | None = None,
        ttl_seconds: int | None = None,
        low_water: Decimal | str | int | None = None,
        increment: Decimal | str | int | None = None,
        renew: bool = False,
    ) -> Grant:
        """Open a multi-capture authorization and return its local view.

        Args:
            account_id: the account to reserve from.
            amount: money to ask for, in the account's currency (or ``tokens``).
            tokens: package tokens to ask for (needs ``model``).
            model: scope the grant to one model; the answer then carries its price.
            ttl_seconds: the grant's life; each increment extends it to this from then
                (default: the server's, as the first answer shows it).
            low_water: ask for more when the local remainder drops below this (default: a
                quarter of ``increment``).
            increment: how much each increment asks for (default: the first ask).
            renew: open a new grant on the next ``try_spend`` when this one expired or was
                closed by the server.

        Returns:
            The grant (``status`` ``declined`` with a ``decline_code`` if nothing was granted).

        Raises:
            TokenwalletError: a final error answer (unknown account, validation error).
            TokenwalletUnavailable: the server could not be reached within ``retry_max_s``.
        """
        g = Grant(
            self,
            account_id,
            amount=amount,
            tokens=tokens,
            model=model,
            ttl_seconds=ttl_seconds,
            low_water=low_water,
            increment=increment,
            renew=renew,
        )
        g.open()
        return g

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Any:
        """One API call, retried on unknown or transient outcomes for up to ``retry_max_s``.

        Args:
            method: the HTTP method.
            path: the path, e.g. ``/v1/authorizations``.
            body: the JSON body (no floats).
            idempotency_key: sent as ``Idempotency-Key`` so a retry returns the first answer.

        Returns:
            The decoded JSON answer (fractions as ``Decimal``).

        Raises:
            TokenwalletError: a final error answer (4xx other than 429).
            TokenwalletUnavailable: retries exhausted, or the client closed meanwhile.
        """
        headers = {"Content-Type": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        content = dumps(body) if body is not None else None
        deadline = time.monotonic() + self.retry_max_s
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                resp = self._http.request(method, path, content=content, headers=headers)
            except httpx.TransportError as exc:
                why = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code < 400:
                    return loads(resp.content)
                code, detail = _problem(resp)
                if resp.status_code not in RETRYABLE_STATUSES:
                    raise TokenwalletError(resp.status_code, code, detail)
                why, retry_after = f"{resp.status_code} {code}", _retry_after(resp)
            delay = self._backoff(attempt, retry_after)
            attempt += 1
            if time.monotonic() + delay > deadline or self._stop.is_set():
                raise TokenwalletUnavailable(503, "unavailable", f"{method} {path}: {why}")
            log.info("tokenwallet %s %s: %s; retrying in %.2f s", method, path, why, delay)
            self._stop.wait(delay)

    def submit(self, fn: Callable[[], None]) -> Future[None]:
        """Run ``fn`` on the client's small worker pool (grant increments and renewals)."""
        with self._cond:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(16, thread_name_prefix="tokenwallet-grant")
            return self._executor.submit(fn)

    # -- the sender thread -------------------------------------------------------------------------

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** min(attempt, 30))
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self._backoff_max)

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._next_batch()
            if batch:
                try:
                    self._send(batch)
                except Exception:  # a bug must not stop delivery of everything else
                    log.exception("tokenwallet usage sender failed; the batch will be re-sent")
                    with self._cond:
                        self._queue.extendleft(reversed(batch))
                    self._stop.wait(self._backoff_max)

    def _next_batch(self) -> list[_Item]:
        with self._cond:
            while not self._stop.is_set():
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    self._queue.append(heapq.heappop(self._delayed)[2])
                wait: float | None = None
                if self._queue:
                    age = now - self._queue[0].queued_at
                    if (
                        len(self._queue) >= self._max_batch
                        or self._flushers
                        or self._closing
                        or age >= self._interval
                    ):
                        n = min(len(self._queue), self._max_batch)
                        return [self._queue.popleft() for _ in range(n)]
                    wait = self._interval - age
                if self._delayed:
                    until = self._delayed[0][0] - now
                    wait = until if wait is None else min(wait, until)
                self._cond.wait(wait)
        return []

    def _send(self, batch: list[_Item]) -> None:
        """Post one batch, hand its final results out, and queue ``in_progress`` ones again."""
        results = self._post_usage(batch)
        if results is None:  # closing: the records stay outstanding and are reported
            return
        final: list[tuple[_Item, UsageResult]] = []
        again: list[_Item] = []
        for item, result in zip(batch, results, strict=True):
            if result.status == "rejected" and result.reason in RETRYABLE_REASONS:
                again.append(item)
            else:
                final.append((item, result))
        self._deliver(final)
        with self._cond:
            self._stats.in_progress += len(again)
            when = time.monotonic() + self._in_progress_delay
            for item in again:
                heapq.heappush(self._delayed, (when, item.seq, item))
            for item, result in final:
                self._count(result)
                del self._outstanding[item.seq]
            self._cond.notify_all()

    def _deliver(self, final: list[tuple[_Item, UsageResult]]) -> None:
        """Give each final result to its sink and ``on_result``; then tell each sink once."""
        sinks: dict[int, _Sink] = {}
        for item, result in final:
            if item.sink is not None:
                sinks[id(item.sink)] = item.sink
                _safely(item.sink.usage_result, result)
            if self._on_result is not None:
                _safely(self._on_result, item.record, result)
        for sink in sinks.values():
            _safely(sink.batch_done)

    def _count(self, result: UsageResult) -> None:
        """Count one final result in the stats (the caller holds the lock)."""
        st = self._stats
        if result.status == "charged":
            st.charged += 1
        elif result.status == "duplicate":
            st.duplicate += 1
        else:
            reason = result.reason or "unknown"
            st.rejected[reason] = st.rejected.get(reason, 0) + 1

    def _post_usage(self, batch: list[_Item]) -> list[UsageResult] | None:
        """Send one batch until it is answered; ``None`` if the client stopped meanwhile."""
        ids = [str(item.record["id"]) for item in batch]
        body = dumps({"records": [item.record for item in batch]})
        headers = {"Content-Type": "application/json"}
        attempt = 0
        while not self._stop.is_set():
            with self._cond:
                self._stats.requests += 1
                self._stats.sent += len(batch)
            retry_after: float | None = None
            try:
                resp = self._http.post("/v1/usage", content=body, headers=headers)
            except httpx.TransportError as exc:
                why = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    try:
                        results = [UsageResult.from_json(r) for r in loads(resp.content)["results"]]
                    except (ValueError, KeyError, TypeError) as exc:
                        results, why = [], f"malformed answer: {exc}"
                    if [r.id for r in results] == ids:
                        return results
                    why = why if not results else "results do not match the records sent"
                elif resp.status_code in RETRYABLE_STATUSES:
                    code, _ = _problem(resp)
                    why, retry_after = f"{resp.status_code} {code}", _retry_after(resp)
                else:
                    code, detail = _problem(resp)
                    log.error("tokenwallet refused a usage batch: %s %s", code, detail)
                    return [UsageResult.rejected(i, code, detail) for i in ids]
            delay = self._backoff(attempt, retry_after)
            attempt += 1
            with self._cond:
                self._stats.retries += 1
            log.warning("tokenwallet usage batch: %s; re-sending in %.2f s", why, delay)
            self._stop.wait(delay)
        return None


def _safely(fn: Callable[..., None], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("tokenwallet result callback failed")


def _problem(resp: httpx.Response) -> tuple[str, str]:
    """The ``code`` and ``detail`` of an error answer (problem+json, or whatever came)."""
    try:
        data = loads(resp.content)
        if isinstance(data, dict):
            return str(data.get("code") or f"http_{resp.status_code}"), str(data.get("detail", ""))
    except ValueError:
        pass
    return f"http_{resp.status_code}", resp.text[:200]


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:  # an HTTP date: not worth a parser here; the backoff applies
        return None
