"""A local view of a multi-capture authorization: spend locally, settle through the queue.

Local accounting, all exact (``Decimal`` money or whole tokens)::

    remaining (local) = held - captured - released      (the server's view, merged)
                        - in_flight                      (try_spend'ed, not settled yet)
                        - pending                        (settled, result not back yet)

``held``, ``captured`` and ``released`` only grow on the server, so answers that arrive out
of order are merged by taking the largest of each. ``captured`` is taken from usage results
(each reflects exactly the records acknowledged so far, in order) and from a refresh the sender
makes itself; increments do not capture, so their ``captured`` (which may already include
records whose results are still on the way) is not adopted, which keeps the local view from
counting a spend twice.
"""

from __future__ import annotations

import decimal
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from integrations.wire import (
    EXACT,
    Authorization,
    GrantState,
    Price,
    TokenwalletError,
    UsageResult,
    to_decimal,
)

if TYPE_CHECKING:
    from integrations.tokenwallet_client import TokenwalletClient

log = logging.getLogger("integrations.tokenwallet")

#: A grant this close to its expiry is not spent from any more (the call's usage record must
#: occur before the expiry to capture it).
EXPIRY_MARGIN = timedelta(seconds=2)
ZERO = Decimal(0)


class Grant:
    """Spend a multi-capture authorization locally; made by :meth:`TokenwalletClient.grant`.

    Thread-safe. Typical use per LLM call::

        cost = grant.cost(estimated_tokens)       # or your own estimate
        if not grant.try_spend(cost):
            refuse the call (hard stop)
        ... make the call ...
        grant.settle(usage_record, cost)          # the actual charge replaces the estimate

    Attributes:
        account_id: the account it reserves from.
        model: the model it is scoped to, or ``None``.
    """

    def __init__(
        self,
        client: TokenwalletClient,
        account_id: str,
        *,
        amount: Decimal | str | int | None,
        tokens: int | None,
        model: str | None,
        ttl_seconds: int | None,
        low_water: Decimal | str | int | None,
        increment: Decimal | str | int | None,
        renew: bool,
    ) -> None:
        """Check the ask and set up local accounting; :meth:`open` then asks the server.

        The arguments are those of :meth:`TokenwalletClient.grant`, which makes the grant.
        """
        asked = amount if tokens is None else tokens
        if asked is None or (amount is not None and tokens is not None):
            raise ValueError("ask for amount (money) or tokens, not both")
        self._client = client
        self.account_id = account_id
        self.model = model
        self._is_tokens = tokens is not None
        self._ask = self._quantity(asked, "amount")
        self._step = self._ask if increment is None else self._quantity(increment, "increment")
        if low_water is not None:
            self._low_water = self._quantity(low_water, "low_water")
        elif self._is_tokens:
            self._low_water = Decimal(int(self._step) // 4)
        else:
            with decimal.localcontext(EXACT):
                self._low_water = self._step / 4
        self._ttl_seconds = ttl_seconds  # also sent with increments, to keep a used grant alive
        self._renew = renew
        self._cond = threading.Condition()
        # the server's view of the current authorization
        self._auth: Authorization | None = None
        self._id = ""
        self._status = "new"
        self._held = self._captured = self._released = ZERO
        self._final = False
        self._expires_at = datetime.now(UTC)
        # local accounting
        self._in_flight = ZERO
        self._pending: dict[str, tuple[str, Decimal]] = {}  # record id -> (auth id, estimate)
        self._pending_total = ZERO  # estimates of pending records naming the current grant
        self._duplicates: list[tuple[str, Decimal]] = []
        self._busy = False  # an increment or a renewal is running
        self._op_failed = False
        self._voided = False

    # -- reading ---------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The current authorization id (it changes when the grant is renewed)."""
        with self._cond:
            return self._id

    @property
    def status(self) -> str:
        """``approved`` while open.

        Else ``declined``, ``voided``, ``expired``, ``captured`` or ``closed`` (the server said
        ``authorization_closed``).
        """
        with self._cond:
            return self._status

    @property
    def final(self) -> bool:
        """The server said the account can give no more than what is granted."""
        with self._cond:
            return self._final

    @property
    def decline_code(self) -> str | None:
        """Why the last grant was declined, if it was."""
        with self._cond:
            return self._auth.decline_code if self._auth else None

    @property
    def expires_at(self) -> datetime:
        """When the current authorization expires."""
        with self._cond:
            return self._expires_at

    @property
    def price(self) -> Price | None:
        """The account's effective price of ``model`` (model-scoped grants only)."""
        with self._cond:
            return self._auth.price if self._auth else None

    @property
    def remaining(self) -> Decimal | int:
        """What can still be spent locally: money (``Decimal``) or tokens (``int``)."""
        with self._cond, decimal.localcontext(EXACT):
            left = max(ZERO, self._local_remaining())
        return int(left) if self._is_tokens else left

    def cost(self, tokens: Mapping[str, int], *, batch: bool = False) -> Decimal:
        """Rate a call locally and exactly with the grant's price.

        Args:
            tokens: the call's token counts (``input_tokens``, ``output_tokens``,
                ``cache_read_tokens``, ``cache_write_5m_tokens``, ``cache_write_1h_tokens``,
                ``reasoning_tokens``).
            batch: the batch discount applies.

        Returns:
            The cost in the account's currency.

        Raises:
            LookupError: the grant is not model-scoped, so the server sent no price.
        """
        price = self.price
        if price is None:
            raise LookupError("no price: only a model-scoped grant carries the model's price")
        return price.cost(tokens, batch=batch)

    # -- spending --------------------------------------------------------------------------------

    def try_spend(self, cost: Decimal | int | str, *, wait: bool = True) -> bool:
        """Reserve ``cost`` locally for one call if the grant covers it.

        Below ``low_water`` an increment starts in the background. When the local remainder
        does not cover ``cost``, an increment (or, with ``renew``, a new grant) is asked for and,
        with ``wait``, awaited. After the server said ``final``, records still unacknowledged
        are awaited too (their estimates may exceed their actual charges) before the answer is
        no: the hard stop.

        Args:
            cost: the call's estimated cost (money) or tokens (token grants).
            wait: wait (up to the client's ``retry_max_s``) for more to be granted.

        Returns:
            True when reserved (the caller then makes the call and settles it), else False.
        """
        amount = self._quantity(cost, "cost")
        if amount < 0:
            raise ValueError("cost must not be negative")
        deadline = time.monotonic() + self._client.retry_max_s
        with self._cond, decimal.localcontext(EXACT):
            waited_op = False
            while True:
                answer = self._try_reserve(amount, wait=wait, waited_op=waited_op)
                if answer is not None:
                    return answer
                left = deadline - time.monotonic()
                if not wait or left <= 0:
                    return False
                waited_op = waited_op or self._busy
                self._cond.wait(left)

    def _try_reserve(self, amount: Decimal, *, wait: bool, waited_op: bool) -> bool | None:
        """One look at the grant for :meth:`try_spend` (lock held, EXACT context).

        Reserves ``amount`` when the local remainder covers it, else starts the increment or
        renewal that may make it fit.

        Args:
            amount: the cost to reserve.
            wait: the caller will wait for more to be granted.
            waited_op: the caller already waited while an increment or renewal ran.

        Returns:
            True when reserved, False when the answer is no, None to wait and look again.
        """
        if self._voided or self._status == "declined":
            return False
        if waited_op and not self._busy and self._op_failed:
            return False  # the server could not be asked; do not hammer it
        if not self._usable():
            if not self._renew or self._status == "new":
                return False
            self._start(self._renew_now)
        elif self._local_remaining() >= amount:
            self._in_flight += amount
            self._top_up()
            return True
        elif self._final:
            if not (wait and self._pending_total > 0):
                return False
        else:
            self._start(self._increment_now)
        return None

    def cancel(self, estimated: Decimal | int | str) -> None:
        """Give back a spend whose call was not made (nothing will be settled for it)."""
        amount = self._quantity(estimated, "estimated")
        with self._cond, decimal.localcontext(EXACT):
            self._in_flight = max(ZERO, self._in_flight - amount)
            self._cond.notify_all()

    def settle(self, record: Mapping[str, Any], estimated: Decimal | int | str) -> str:
        """Report a call's usage naming this grant; its result replaces the estimate.

        Args:
            record: the UsageRecord (``account_id`` and ``model`` default to the grant's;
                ``authorization_id`` is set to the current authorization).
            estimated: what ``try_spend`` reserved for this call.

        Returns:
            The record id.

        Raises:
            QueueFull: the client's queue is full (the estimate stays reserved; retry later).
        """
        est = self._quantity(estimated, "estimated")
        rec = dict(record)
        rec.setdefault("account_id", self.account_id)
        if self.model is not None:
            rec.setdefault("model", self.model)
        rid = str(rec.get("id") or uuid.uuid4())
        rec["id"] = rid
        with self._cond, decimal.localcontext(EXACT):
            auth_id = self._id
            rec["authorization_id"] = auth_id
            moved = min(est, self._in_flight)
            self._in_flight -= moved
            self._pending[rid] = (auth_id, est)
            self._pending_total += est
        try:
            self._client._enqueue(rec, self)
        except Exception:
            with self._cond, decimal.localcontext(EXACT):
                if self._pending.pop(rid, None) is not None and auth_id == self._id:
                    self._pending_total -= est
                self._in_flight += moved
            raise
        return rid

    def refresh(self) -> Authorization:
        """Read the authorization from the server (``GET``) and adopt what it says."""
        with self._cond:
            auth_id = self._id
        auth = Authorization.from_json(self._client.call("GET", f"/v1/authorizations/{auth_id}"))
        with self._cond, decimal.localcontext(EXACT):
            self._adopt(auth, captured=True)
            self._cond.notify_all()
        return auth

    def void(self) -> Authorization:
        """Stop spending, flush pending usage, and give the rest back to the account.

        Returns:
            The voided authorization.
        """
        with self._cond:
            self._voided = True
            while self._busy:  # an increment or renewal finishes first
                self._cond.wait()
        self._client.flush(self._client.retry_max_s)
        with self._cond:
            auth_id = self._id
        data = self._client.call(
            "POST", f"/v1/authorizations/{auth_id}/void", idempotency_key=str(uuid.uuid4())
        )
        auth = Authorization.from_json(data)
        with self._cond, decimal.localcontext(EXACT):
            self._adopt(auth, captured=True)
            self._cond.notify_all()
        return auth

    def __enter__(self) -> Grant:
        """Use the grant in a ``with`` block; it is voided on the way out if still approved."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Void the grant if it is still approved (pending usage is flushed first)."""
        if self.status == "approved":
            self.void()

    # -- talking to the server -------------------------------------------------------------------

    def open(self) -> None:
        """Ask the server for the grant (called once by :meth:`TokenwalletClient.grant`)."""
        body: dict[str, Any] = {"account_id": self.account_id, "multi_capture": True}
        body.update(self._ask_body(self._ask))
        if self.model is not None:
            body["model"] = self.model
        data = self._client.call(
            "POST", "/v1/authorizations", body, idempotency_key=str(uuid.uuid4())
        )
        auth = Authorization.from_json(data)
        with self._cond, decimal.localcontext(EXACT):
            self._install(auth)
            if self._ttl_seconds is None and auth.state.is_open:  # the server's default TTL
                life = (auth.expires_at - datetime.now(UTC)).total_seconds()
                self._ttl_seconds = max(1, min(86_400, round(life)))

    def _ask_body(self, quantity: Decimal) -> dict[str, Any]:
        body: dict[str, Any] = (
            {"tokens": int(quantity)} if self._is_tokens else {"amount": str(quantity)}
        )
        if self._ttl_seconds is not None:
            body["ttl_seconds"] = self._ttl_seconds
        return body

    def _start(self, op: Any) -> None:
        """Run ``op`` (an increment or renewal) in the background unless one is running."""
        if self._busy:
            return
        self._busy = True
        try:
            self._client.submit(lambda: self._run_op(op))
        except RuntimeError:  # the client is closing: its worker pool takes no more work
            self._busy, self._op_failed = False, True

    def _run_op(self, op: Any) -> None:
        failed = True
        try:
            op()
            failed = False
        except Exception as exc:
            log.warning("tokenwallet grant %s: %s", self._id, exc)
        finally:
            with self._cond:
                self._busy, self._op_failed = False, failed
                self._cond.notify_all()

    def _increment_now(self) -> None:
        with self._cond:
            auth_id = self._id
        try:
            data = self._client.call(
                "POST",
                f"/v1/authorizations/{auth_id}/increment",
                self._ask_body(self._step),
                idempotency_key=str(uuid.uuid4()),
            )
        except TokenwalletError as exc:
            if exc.code not in ("authorization_closed", "not_found"):
                raise
            with self._cond:
                if self._id == auth_id:
                    self._status = "closed"
            return
        auth = Authorization.from_json(data)
        with self._cond, decimal.localcontext(EXACT):
            self._adopt(auth, captured=False)

    def _renew_now(self) -> None:
        with self._cond:
            old = self._id
        self._client.flush(self._client.retry_max_s)  # usage of the old grant captures it first
        try:  # give back what it still holds (if it has not expired on the server yet)
            self._client.call("POST", f"/v1/authorizations/{old}/void")
        except TokenwalletError as exc:
            log.info("tokenwallet grant %s: void before renewal: %s", old, exc)
        self.open()
        log.info("tokenwallet grant %s renewed as %s", old, self.id)

    # -- the sender's side (_Sink) ---------------------------------------------------------------

    def usage_result(self, result: UsageResult) -> None:
        """Adopt the result of a settled record (called on the sender thread)."""
        with self._cond, decimal.localcontext(EXACT):
            entry = self._pending.pop(result.id, None)
            if entry is None:
                return
            auth_id, est = entry
            current = auth_id == self._id
            if current and result.status == "duplicate":  # no state attached: refresh
                self._duplicates.append((result.id, est))
                return
            if current:
                self._pending_total -= est
            if result.authorization is not None:
                self._adopt_state(result.authorization)
            self._top_up()
            self._cond.notify_all()

    def batch_done(self) -> None:
        """After a batch.

        Records answered ``duplicate`` were captured by an earlier attempt whose state never reached
        us; read the grant once and drop their estimates.
        """
        with self._cond:
            dups, self._duplicates = self._duplicates, []
            auth_id = self._id
        if not dups:
            return
        try:
            data = self._client.call("GET", f"/v1/authorizations/{auth_id}")
            auth: Authorization | None = Authorization.from_json(data)
        except TokenwalletError as exc:
            log.warning("tokenwallet grant %s: refresh failed: %s", auth_id, exc)
            auth = None
        with self._cond, decimal.localcontext(EXACT):
            if auth is not None:
                self._adopt(auth, captured=True)
            if auth_id == self._id:
                self._pending_total -= sum((est for _, est in dups), ZERO)
            self._top_up()
            self._cond.notify_all()

    # -- state (call with the lock held, in the EXACT context) -----------------------------------

    def _install(self, auth: Authorization) -> None:
        """Adopt a newly opened authorization; records of the previous one no longer count."""
        s = auth.state
        self._auth, self._id, self._status = auth, s.id, s.status
        self._held, self._captured = s.held, s.captured
        self._released = s.released if s.is_open else ZERO
        self._final, self._expires_at = s.final, auth.expires_at
        self._pending_total = ZERO
        self._cond.notify_all()

    def _adopt(self, auth: Authorization, *, captured: bool) -> None:
        s = auth.state
        if s.id != self._id:
            return
        self._auth = auth
        self._final = s.final
        self._expires_at = max(self._expires_at, auth.expires_at)
        if captured:
            self._adopt_state(s)
        elif not s.is_open:
            self._status = s.status
        else:
            self._held = max(self._held, s.held)
            self._released = max(self._released, s.released)

    def _adopt_state(self, s: GrantState) -> None:
        if s.id != self._id:
            return
        if not s.is_open:
            self._status = s.status
            return
        self._held = max(self._held, s.held)
        self._captured = max(self._captured, s.captured)
        self._released = max(self._released, s.released)

    def _usable(self) -> bool:
        return (
            self._status == "approved"
            and not self._voided
            and datetime.now(UTC) < self._expires_at - EXPIRY_MARGIN
        )

    def _local_remaining(self) -> Decimal:
        if self._status != "approved":
            return ZERO
        server = self._held - self._captured - self._released
        return server - self._in_flight - self._pending_total

    def _top_up(self) -> None:
        if (
            self._usable()
            and not self._final
            and not self._busy
            and self._local_remaining() < self._low_water
        ):
            self._start(self._increment_now)

    def _quantity(self, value: Decimal | int | str, what: str) -> Decimal:
        q = to_decimal(value, what)
        if self._is_tokens and q != q.to_integral_value():
            raise ValueError(f"{what} is a token count and must be whole, got {value!r}")
        return q
