"""The gateway hot path: usage records and authorizations, many operations per transaction.

Every operation a gateway calls (charge a batch of usage records, authorize one call, grant or
increment a multi-capture authorization, void it) runs through :func:`execute`, which takes a
list of operations and runs them in order in the caller's transaction:

1. one round trip locks and reads what they need (:mod:`wallet.snapshot`);
2. they are applied one after another to that state in memory, each seeing the effects of the
   ones before it (the burn-down of :mod:`wallet.burndown`, the rater of :mod:`wallet.billing`);
3. one round trip writes the result back (:mod:`wallet.writeback`): lots, quota windows,
   authorizations, usage records, and one ledger entry per book for the whole batch.

The HTTP layer batches concurrent calls into one :func:`execute` (group commit); tests, jobs
and the CLI call the same functions one operation at a time.

Authorizations reserve through the account's burn order and keep the reservation in the wallet
(lots' ``reserved``, plan quota, credit limit), not in the ledger: nothing moves until usage is
captured. A record that names an open authorization of its account *captures* it: the
reservation is given back, the record is charged as plain usage (partially, if need be: what
cannot be paid is credited with reason ``capped_at_hold``), and a multi-capture grant reserves
again what it still holds. Records naming an authorization of another account, an unknown one,
or (for a model-scoped grant) another model are rejected; records naming one that is closed
(captured, voided, expired, declined), or made after it expired, are charged as plain usage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from sqlalchemy.orm import Session

from ledger.amounts import Amount
from ledger.errors import DomainError, NotFound
from ledger.ids import new_id
from plans.pricebook import ResolvedPrice
from plans.prices import ModelPrice
from plans.rating import Tokens
from wallet.billing import (
    max_atoms_per_token,
    rate_atoms,
    wholesale_ratio,
)
from wallet.burn_order import BONUS, OVERAGE, PAID
from wallet.burndown import (
    MONEY_SOURCES,
    Draw,
    WalletState,
    draw,
    reserve,
)
from wallet.errors import InvalidRequest
from wallet.gateway_ops import (
    AuthorizationClosed,
    AuthorizationView,
    Authorize,
    ChargeUsage,
    Grant,
    Increment,
    NotMultiCapture,
    Operation,
    OperationResult,
    Release,
    UsageResult,
    closed_state,
    view_of,
)
from wallet.gateway_usage import UsageBatch
from wallet.records import UsageIn
from wallet.snapshot import AccountRow, AuthRow, load
from wallet.writeback import write

__all__ = [
    "MAX_BATCH",
    "AuthorizationClosed",
    "AuthorizationView",
    "Authorize",
    "ChargeUsage",
    "Grant",
    "Increment",
    "NotMultiCapture",
    "Operation",
    "OperationResult",
    "Release",
    "UsageResult",
    "execute",
    "run_one",
    "view_of",
]

MAX_BATCH = 1000


def _bucket(at: datetime, step_seconds: int = 60) -> datetime:
    """The rating watermark moves in steps, so only one batch a minute writes its row."""
    return datetime.fromtimestamp(
        (int(at.timestamp()) // step_seconds + 1) * step_seconds, at.tzinfo
    )


class _Batch(UsageBatch):
    """The in-memory work of one :func:`execute` call.

    Usage (:class:`UsageBatch`) and authorizations.
    """

    def authorize(self, op: Authorize) -> AuthorizationView | DomainError:
        if op.estimated_input_tokens < 0 or op.max_output_tokens < 0:
            return InvalidRequest("token estimates must not be negative")
        a = self.account(op.account_id, op.scope)
        if a is None:
            return NotFound(f"account {op.account_id} does not exist")
        auth = self._new_auth(a, op.model, op.ttl, multi_capture=False)
        stop = self.stopped(a)
        if stop is not None:
            return self._decline(auth, stop)
        try:
            resolved = self.resolve(op.model, self.now, a)
        except DomainError as exc:
            return self._decline(auth, exc.code)
        tokens = Tokens(input_tokens=op.estimated_input_tokens, output_tokens=op.max_output_tokens)
        money, _ = rate_atoms(tokens, resolved.price, batch=False)
        w = self.wallet(a.id)
        d, _, refusal = draw(w, op.model, money, tokens.total, self.now, valid_at=auth.expires_at)
        if d is None:
            return self._decline(auth, refusal)
        rw, rd = self.reseller_wallet(a), None
        if rw is not None and resolved.wholesale is not None:
            wmoney, _ = rate_atoms(tokens, resolved.wholesale.price, batch=False)
            rd, _, _ = draw(
                rw,
                op.model,
                wmoney,
                tokens.total,
                self.now,
                sources=MONEY_SOURCES,
                valid_at=auth.expires_at,
            )
            if rd is None:
                return self._decline(auth, "reseller_float_exhausted")
        reserve(w, d, self.now, auth.reservation)
        if rw is not None and rd is not None:
            reserve(rw, rd, self.now, auth.reservation, reseller=True)
        auth.held_money = d.money.get(BONUS, 0) + d.money.get(PAID, 0) + d.money.get(OVERAGE, 0)
        auth.held_tokens = d.package_tokens
        auth.plan_covered = bool(d.plan_requests)
        auth.requested = money
        return self.view(auth)

    def _new_auth(
        self, a: AccountRow, model: str | None, ttl: timedelta, *, multi_capture: bool
    ) -> AuthRow:
        auth = AuthRow(
            id=new_id("auth"),
            account_id=a.id,
            reseller_account_id=a.parent_id,
            model=model,
            multi_capture=multi_capture,
            token_grant=False,
            status="approved",
            decline_code=None,
            requested=0,
            held_money=0,
            held_tokens=0,
            captured_money=0,
            captured_tokens=0,
            released_money=0,
            released_tokens=0,
            captures=0,
            final=False,
            plan_covered=False,
            expires_at=self.now + ttl,
            created_at=self.now,
            new=True,
            dirty=True,
        )
        self.snap.auths[auth.id] = auth
        return auth

    def _decline(self, auth: AuthRow, code: str | None, **extra: Any) -> AuthorizationView:
        auth.status, auth.decline_code, auth.final = "declined", code, True
        auth.resolved_at = self.now
        return self.view(auth, **extra)

    def grant(self, op: Grant) -> AuthorizationView | DomainError:
        a = self.account(op.account_id, op.scope)
        if a is None:
            return NotFound(f"account {op.account_id} does not exist")
        try:
            ask, tokens = _asked(op.amount, op.tokens, a)
            self._check_reseller_grant(a, op.model)
        except DomainError as exc:
            return exc
        auth = self._new_auth(a, op.model, op.ttl, multi_capture=True)
        auth.token_grant = tokens
        auth.requested = ask
        stop = self.stopped(a)
        if stop is not None:
            return self._decline(auth, stop, granted_now=0)
        price: ModelPrice | None = None
        resolved: ResolvedPrice | None = None
        if op.model is not None:
            try:
                resolved = self.resolve(op.model, self.now, a)
            except DomainError as exc:
                return self._decline(auth, exc.code)
            price = resolved.price
        got, code = self._grant_more(auth, a, ask, tokens, resolved)
        if got == 0:
            return self._decline(auth, code, price=price, granted_now=0)
        return self.view(auth, price=price, granted_now=got)

    def _check_reseller_grant(self, a: AccountRow, model: str | None) -> None:
        if a.parent_id and model is None:
            raise InvalidRequest(
                "a reseller's sub-account needs a model-scoped grant: the reseller's float is"
                " reserved at that model's wholesale price; send model"
            )

    def _grant_more(
        self,
        auth: AuthRow,
        a: AccountRow,
        ask: int,
        tokens: bool,
        resolved: ResolvedPrice | None,
    ) -> tuple[int, str | None]:
        """Reserve up to ``ask`` more for a grant (and the reseller's float at wholesale).

        Returns what was granted and, when it is nothing, why.
        """
        w = self.wallet(a.id)
        d = self._grant_draw(w, auth, ask, tokens)
        got = d.package_tokens if tokens else d.charged
        code: str | None = "insufficient_funds"
        rw = self.reseller_wallet(a)
        wneed = 0
        if rw is not None and resolved is not None and resolved.wholesale is not None and got:
            per_unit = _wholesale_per_unit(resolved, tokens)
            wneed = math.ceil(got * per_unit)
            rd = self._draw_float(rw, auth, wneed)
            if rd.charged < wneed:  # the float limits the grant
                got = min(got, math.floor(rd.charged / per_unit)) if per_unit else got
                wneed = math.ceil(got * per_unit)
                code = "reseller_float_exhausted"
                d = self._grant_draw(w, auth, got, tokens)
        if got == 0:
            return 0, code
        reserve(w, d, self.now, auth.reservation)
        if rw is not None and wneed:
            reserve(
                rw, self._draw_float(rw, auth, wneed), self.now, auth.reservation, reseller=True
            )
        if tokens:
            auth.held_tokens += got
        else:
            auth.held_money += got
        auth.final = got < ask or not self._can_give_more(auth, a, tokens)
        auth.dirty = True
        return got, None

    def _draw_float(self, rw: WalletState, auth: AuthRow, atoms: int) -> Draw:
        """What the reseller's float can give of ``atoms`` at wholesale for a grant."""
        rd, _, _ = draw(
            rw,
            auth.model,
            atoms,
            0,
            self.now,
            sources=MONEY_SOURCES,
            partial=True,
            valid_at=auth.expires_at,
        )
        assert rd is not None
        return rd

    def _can_give_more(self, auth: AuthRow, a: AccountRow, tokens: bool) -> bool:
        """Whether the account could still reserve anything for this grant."""
        d = self._grant_draw(self.wallet(a.id), auth, 1, tokens)
        return (d.package_tokens if tokens else d.charged) > 0

    def increment(self, op: Increment) -> AuthorizationView | DomainError:
        """Reserve more for an open multi-capture grant, first charging the records sent along."""
        checked = self._incrementable(op)
        if isinstance(checked, DomainError):
            return checked
        auth, a, ask, tokens = checked
        usage = tuple(self.charge(op)) if op.records else None
        if not auth.is_open:  # a record of the usage so far closed it (it had expired)
            return AuthorizationClosed(f"authorization {auth.id} is {auth.status}")
        if op.ttl is not None:
            auth.expires_at = max(auth.expires_at, self.now + op.ttl)
            auth.dirty = True
        resolved = self._grant_price(auth, a)
        auth.requested += ask
        stop = self.stopped(a)
        got, code = (0, stop) if stop else self._grant_more(auth, a, ask, tokens, resolved)
        if got == 0:
            auth.final, auth.dirty = True, True
        # why nothing more could be granted (the grant stays open); cleared when more is
        auth.decline_code = None if got else code
        price = resolved.price if resolved is not None else None
        return self.view(auth, price=price, granted_now=got, usage=usage)

    def _incrementable(self, op: Increment) -> tuple[AuthRow, AccountRow, int, bool] | DomainError:
        """The grant an increment names, its account and what is asked; or why it is refused.

        Returns:
            ``(authorization, account, atoms or tokens asked, whether tokens)``, or the error:
            unknown, a single-use hold, closed or expired, a bad amount, the wrong kind.
        """
        auth = self.snap.auths.get(op.authorization_id)
        if auth is None or self.account(auth.account_id, op.scope) is None:
            return NotFound(f"authorization {op.authorization_id} does not exist")
        if not auth.multi_capture:
            return NotMultiCapture(
                f"authorization {auth.id} is a single-use hold; only multi-capture"
                " authorizations can be incremented"
            )
        if not auth.is_open or auth.expires_at <= self.now:
            return AuthorizationClosed(
                f"authorization {auth.id} is {closed_state(auth, self.now)}; open a new one"
            )
        a = self.snap.accounts[auth.account_id]
        try:
            ask, tokens = _asked(op.amount, op.tokens, a)
        except DomainError as exc:
            return exc
        if tokens != auth.token_grant:
            kind = "tokens" if auth.token_grant else "amount"
            return InvalidRequest(f"authorization {auth.id} grants {kind}; increment with {kind}")
        return auth, a, ask, tokens

    def _grant_price(self, auth: AuthRow, a: AccountRow) -> ResolvedPrice | None:
        """The price of a model-scoped grant's model now; None when unscoped or not priced."""
        if auth.model is None:
            return None
        try:
            return self.resolve(auth.model, self.now, a)
        except DomainError:
            return None

    def release(self, op: Release) -> AuthorizationView | DomainError:
        auth = self.snap.auths.get(op.authorization_id)
        if auth is None or self.account(auth.account_id, op.scope) is None:
            return NotFound(f"authorization {op.authorization_id} does not exist")
        if auth.is_open and (op.status == "voided" or auth.expires_at <= self.now):
            self._release(auth, op.status)
        return self.view(auth)


def _asked(amount: str | None, tokens: int | None, a: AccountRow) -> tuple[int, bool]:
    """What a grant or increment asks for: (atoms or tokens, whether tokens)."""
    if (amount is None) == (tokens is None):
        raise InvalidRequest("send either amount (money) or tokens, not both")
    if tokens is not None:
        if tokens <= 0:
            raise InvalidRequest("tokens must be a positive integer")
        return tokens, True
    assert amount is not None
    atoms = Amount.parse(amount, a.unit).atoms  # InvalidAmount names what is wrong
    if atoms <= 0:
        raise InvalidRequest(f"amount must be positive; got {amount}")
    return atoms, False


def _wholesale_per_unit(resolved: ResolvedPrice, tokens: bool) -> Fraction:
    """Wholesale atoms to reserve per unit granted.

    Per retail atom for money grants, per token at the dearest wholesale component for token grants.
    """
    assert resolved.wholesale is not None
    if tokens:
        return max_atoms_per_token(resolved.wholesale.price)
    return wholesale_ratio(resolved.price, resolved.wholesale.price)


# -- entry point --------------------------------------------------------------------------------


def _needs(ops: Sequence[Operation]) -> tuple[set[str], set[str], dict[str, str], set[str]]:
    """Accounts, authorizations, record claims and gated accounts of a batch."""
    accounts: set[str] = set()
    auths: set[str] = set()
    claims: dict[str, str] = {}
    gated: set[str] = set()
    for op in ops:
        if isinstance(op, Authorize | Grant):
            accounts.add(op.account_id)
        elif isinstance(op, Increment | Release):
            auths.add(op.authorization_id)
        if isinstance(op, ChargeUsage | Increment):
            for r in op.records:
                if isinstance(r, UsageIn):
                    accounts.add(r.account_id)
                    gated.add(r.account_id)
                    claims.setdefault(r.id, r.account_id)
                    if r.authorization_id:
                        auths.add(r.authorization_id)
    return accounts, auths, claims, gated


def execute(
    session: Session, ops: Sequence[Operation], *, now: datetime | None = None
) -> list[OperationResult]:
    """Run operations in order in the caller's transaction (which the caller commits).

    Two round trips for the whole list. Domain errors are returned in place of a result, not raised,
    so one operation's error does not undo the others.

    Args:
        session: the caller's transaction.
        ops: the operations, run in this order.
        now: the instant the operations happen (default: the database clock read after the
            batch's locks were granted).
    """
    accounts, auths, claims, gated = _needs(ops)
    snap = load(
        session,
        account_ids=accounts,
        authorization_ids=auths,
        claims=claims,
        gated_accounts=gated,
    )
    batch = _Batch(session, snap, now)
    results: list[OperationResult] = []
    for op in ops:
        if isinstance(op, ChargeUsage):
            results.append(batch.charge(op))
        elif isinstance(op, Authorize):
            results.append(batch.authorize(op))
        elif isinstance(op, Grant):
            results.append(batch.grant(op))
        elif isinstance(op, Increment):
            results.append(batch.increment(op))
        else:
            results.append(batch.release(op))
    write(
        session,
        snap,
        charged=batch.charged,
        unclaim=sorted(batch.unclaim),
        priced_until={c: _bucket(at) for c, at in batch.priced_until.items()},
        received_at=batch.now,
    )
    return results


def run_one(session: Session, op: Operation, *, now: datetime | None = None) -> Any:
    """Run one operation; raise its domain error instead of returning it."""
    (result,) = execute(session, [op], now=now)
    if isinstance(result, DomainError):
        raise result
    return result
