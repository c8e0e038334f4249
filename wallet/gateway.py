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
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from sqlalchemy.orm import Session

from ledger.amounts import Amount
from ledger.errors import DomainError, NotFound
from ledger.ids import new_id
from ledger.units import TOKENS, Unit
from ledger.units import unit as unit_of
from plans.catalog import FailedRequestPolicy
from plans.price_context import PriceContext, standing_contract
from plans.pricebook import ResolvedPrice
from plans.prices import ModelPrice
from plans.rating import Rating, Tokens, rate_tokens
from wallet.accounts import EVERYTHING, Scope
from wallet.billing import (
    Billing,
    apply_policy,
    max_atoms_per_token,
    rate_atoms,
    wholesale_ratio,
)
from wallet.burn_order import BONUS, OVERAGE, PAID
from wallet.burndown import (
    GRANT_MONEY_SOURCES,
    GRANT_TOKEN_SOURCES,
    MONEY_SOURCES,
    Draw,
    WalletState,
    apply_draw,
    draw,
    give_back,
    reserve,
)
from wallet.errors import Conflict, InvalidRequest
from wallet.maintenance import DEFAULT_RETENTION
from wallet.records import Rejected, UsageIn
from wallet.snapshot import AccountRow, AuthRow, Snapshot, load
from wallet.writeback import ChargedRecord, write

MAX_BATCH = 1000
#: How far ahead of the server clock a record's ``occurred_at`` may be (gateway clock skew).
MAX_CLOCK_SKEW = timedelta(minutes=5)


class AuthorizationClosed(DomainError):
    """The authorization was voided, expired or captured; it cannot grant more."""

    code = "authorization_closed"
    status = 409


class NotMultiCapture(Conflict):
    """Increments apply to multi-capture authorizations only."""

    code = "not_multi_capture"


# -- operations ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChargeUsage:
    """Charge a batch of usage records (results in request order)."""

    records: Sequence[UsageIn | Rejected]
    scope: Scope = EVERYTHING
    retention: timedelta = DEFAULT_RETENTION


@dataclass(frozen=True, slots=True)
class Authorize:
    """Reserve what one call can cost at most (a single-use hold)."""

    account_id: str
    model: str
    estimated_input_tokens: int
    max_output_tokens: int
    ttl: timedelta
    scope: Scope = EVERYTHING


@dataclass(frozen=True, slots=True)
class Grant:
    """Open a multi-capture authorization of ``amount`` (money, a decimal string in the
    account's currency) or ``tokens`` (package tokens), optionally scoped to ``model``."""

    account_id: str
    ttl: timedelta
    amount: str | None = None
    tokens: int | None = None
    model: str | None = None
    scope: Scope = EVERYTHING


@dataclass(frozen=True, slots=True)
class Increment:
    """Charge ``records`` (the usage so far), then ask a multi-capture authorization for more;
    ``ttl`` extends its life from now."""

    authorization_id: str
    amount: str | None = None
    tokens: int | None = None
    ttl: timedelta | None = None
    records: Sequence[UsageIn | Rejected] = ()
    scope: Scope = EVERYTHING
    retention: timedelta = DEFAULT_RETENTION


@dataclass(frozen=True, slots=True)
class Release:
    """Give an open authorization's reservation back: ``voided`` by the gateway, or
    ``expired`` by the expiry job (only if it has expired by then). Closed ones are left as
    they are."""

    authorization_id: str
    status: str = "voided"
    scope: Scope = EVERYTHING


Operation = ChargeUsage | Authorize | Grant | Increment | Release


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthorizationView:
    """An authorization as callers see it.

    Money amounts are atoms of ``currency``; token amounts whole tokens. For a multi-capture
    grant, ``granted`` and the other amounts are in its unit (``tokens`` for a token grant,
    else money); ``remaining`` is what it reserves now. For a single-use hold, ``held_money``
    and ``held_tokens`` are what it reserved.
    """

    id: str
    account_id: str
    status: str
    multi_capture: bool
    model: str | None
    currency: Unit
    token_grant: bool
    held_money: int
    held_tokens: int
    captured_money: int
    captured_tokens: int
    released_money: int
    released_tokens: int
    remaining: int
    captures: int
    final: bool
    plan_covered: bool
    expires_at: datetime
    decline_code: str | None
    price: ModelPrice | None = None
    granted_now: int | None = None
    usage: tuple[UsageResult, ...] | None = None

    @property
    def unit(self) -> Unit:
        """The unit of a grant's amounts."""
        return TOKENS if self.token_grant else self.currency

    @property
    def granted(self) -> int:
        """What was granted in total (a grant's unit)."""
        return self.held_tokens if self.token_grant else self.held_money

    @property
    def captured(self) -> int:
        """What records took from it (a grant's unit)."""
        return self.captured_tokens if self.token_grant else self.captured_money


# not frozen: a frozen dataclass's __init__ costs ~2 us more a record on the gateway path
# (bench/README.md); treat it as immutable
@dataclass(slots=True)
class UsageResult:
    """The outcome of one record: ``charged``, ``duplicate`` or ``rejected``; a record that
    captured from a multi-capture authorization carries its state after the capture."""

    id: str
    status: str
    billed: Amount | None = None
    credited: Amount | None = None
    reason: str | None = None
    detail: str | None = None
    authorization: AuthorizationView | None = None
    #: a charged record: its parsed tokens and how they were rated (the charge by component)
    tokens: Tokens | None = None
    rating: Rating | None = None


OperationResult = list[UsageResult] | AuthorizationView | DomainError


# -- the batch ----------------------------------------------------------------------------------


def _bucket(at: datetime, step_seconds: int = 60) -> datetime:
    """The rating watermark moves in steps, so only one batch a minute writes its row."""
    return datetime.fromtimestamp(
        (int(at.timestamp()) // step_seconds + 1) * step_seconds, at.tzinfo
    )


class _Batch:
    """The in-memory work of one :func:`execute` call."""

    def __init__(self, session: Session, snap: Snapshot, now: datetime | None) -> None:
        self.session = session
        self.snap = snap
        self.now = now or snap.received_at
        self.prices: dict[str, PriceContext] = {}
        self.charged: list[ChargedRecord] = []
        self.unclaim: set[str] = set()
        self.priced_until: dict[str, datetime] = {}
        self.seen: dict[str, UsageResult | None] = {}  # record ids of this batch

    # -- pricing --

    def resolve(self, model: str, at: datetime, a: AccountRow) -> ResolvedPrice:
        ctx = self.prices.get(a.currency)
        if ctx is None:
            ids = [x.id for x in self.snap.accounts.values() if x.currency == a.currency]
            ctx = self.prices[a.currency] = PriceContext.load(
                self.session,
                a.currency,
                account_ids=ids,
                version=self.snap.catalog_versions.get(a.currency),
            )
        standing = standing_contract(a.id, a.discounts) if a.discounts else None
        return ctx.resolve(
            model=model,
            at=at,
            account_id=a.id,
            reseller_account_id=a.parent_id,
            standing=standing,
        )

    def account(self, account_id: str, scope: Scope) -> AccountRow | None:
        a = self.snap.accounts.get(account_id)
        return a if a is not None and scope.allows(a) else None

    def wallet(self, account_id: str) -> WalletState:
        return self.snap.wallets[account_id]

    def stopped(self, a: AccountRow) -> str | None:
        """Why the account may not be served (``account_suspended``, ``account_closed``; its
        reseller's status counts for a sub-account), or None when it is active."""
        for row in (a, self.snap.accounts.get(a.parent_id) if a.parent_id else None):
            if row is not None and row.status != "active":
                return f"account_{row.status}"
        return None

    def reseller_wallet(self, a: AccountRow) -> WalletState | None:
        return self.snap.wallets.get(a.parent_id) if a.parent_id else None

    # -- views --

    def view(self, auth: AuthRow, **extra: Any) -> AuthorizationView:
        return view_of(auth, self.snap.accounts[auth.account_id].unit, **extra)

    # -- usage --

    def charge(self, op: ChargeUsage | Increment) -> list[UsageResult]:
        out: list[UsageResult] = []
        mine: set[str] = set()  # ids of this operation (a repeat within it is an error)
        for r in op.records:
            if isinstance(r, Rejected):
                out.append(UsageResult(r.id, "rejected", reason=r.reason, detail=r.detail))
                continue
            if r.id in mine:
                out.append(
                    _rejected(
                        r.id, "duplicate_in_batch", f"record id {r.id} appears twice in this batch"
                    )
                )
                continue
            mine.add(r.id)
            first = self.seen.get(r.id)
            if first is not None and first.status != "rejected":
                # sent again by a concurrent call of the same group: as if it came after
                out.append(
                    replace(first, status="duplicate", authorization=None, tokens=None, rating=None)
                )
                continue
            result = self._charge_one(r, op)
            self.seen[r.id] = result
            out.append(result)
        return out

    def _outside_window(self, r: UsageIn, op: ChargeUsage | Increment) -> UsageResult | None:
        if r.occurred_at < self.now - op.retention:
            return _rejected(
                r.id,
                "usage_too_old",
                f"occurred_at {r.occurred_at.isoformat()} is more than {op.retention.days} days"
                " ago; usage that old is no longer accepted",
            )
        if r.occurred_at > self.now + MAX_CLOCK_SKEW:
            return _rejected(
                r.id,
                "occurred_in_future",
                f"occurred_at {r.occurred_at.isoformat()} is ahead of the server clock"
                f" ({self.now.isoformat()}) by more than {MAX_CLOCK_SKEW}; check the gateway clock",
            )
        return None

    def _charge_one(self, r: UsageIn, op: ChargeUsage | Increment) -> UsageResult:
        claimed = r.id in self.snap.claimed
        result = self._outside_window(r, op)
        if result is None:
            if not claimed:
                return self._not_claimed(r)
            result = self._charge_claimed(r, op.scope)
        if claimed:
            if result.status == "rejected":
                self.unclaim.add(r.id)
            else:
                self.unclaim.discard(r.id)
        return result

    def _not_claimed(self, r: UsageIn) -> UsageResult:
        prev = self.snap.previous.get(r.id)
        if prev is None:  # claimed by a batch that is still being written: retry later
            return _rejected(
                r.id, "in_progress", "this record id is being charged by another request"
            )
        if prev.account_id != r.account_id:
            return _rejected(
                r.id,
                "id_conflict",
                f"record id {r.id} was already used by another account; ids must be unique",
            )
        unit = unit_of(prev.currency)
        return UsageResult(
            r.id, "duplicate", Amount(prev.billed, unit), Amount(prev.credited, unit), prev.reason
        )

    def _charge_claimed(self, r: UsageIn, scope: Scope) -> UsageResult:
        a = self.account(r.account_id, scope)
        if a is None:
            return _rejected(r.id, "unknown_account", f"account {r.account_id} does not exist")
        auth: AuthRow | None = None
        if r.authorization_id:
            found = self._named_authorization(r, scope)
            if isinstance(found, UsageResult):
                return found
            auth = found
        stop = self.stopped(a)
        if stop is not None and not (
            auth is not None and auth.is_open and not self._expired(auth, r)
        ):
            # a call made under an authorization approved before the suspension still captures
            # it (the money is reserved and the call was made); everything else waits
            return _rejected(r.id, stop, _stopped_detail(stop, a))
        rec = self._rated(r, a)
        if isinstance(rec, UsageResult):
            return rec
        if auth is not None and auth.is_open and self._expired(auth, r):
            self._release(auth, "expired")
        if auth is not None and auth.is_open:
            view = self._capture(auth, rec)
        else:
            refusal = self._pay(rec)
            if refusal is not None:
                return _rejected(r.id, *refusal)
            view = None
        self.charged.append(rec)
        assert rec.draw is not None
        return UsageResult(
            r.id,
            "charged",
            Amount(rec.draw.charged, a.unit),
            Amount(rec.billing.credited, a.unit),
            rec.billing.reason,
            authorization=view,
            tokens=r.tokens,
            rating=rec.billing.rating,
        )

    def _named_authorization(self, r: UsageIn, scope: Scope) -> AuthRow | UsageResult:
        """The authorization a record names, or its rejection (unknown, another account's, or
        a model-scoped grant of another model)."""
        auth = self.snap.auths.get(r.authorization_id or "")
        if auth is None or self.account(auth.account_id, scope) is None:
            return _rejected(
                r.id, "unknown_authorization", f"authorization {r.authorization_id} does not exist"
            )
        if auth.account_id != r.account_id:
            return _rejected(
                r.id,
                "authorization_account_mismatch",
                f"authorization {auth.id} belongs to another account, not {r.account_id}",
            )
        if auth.multi_capture and auth.model is not None and auth.model != r.model:
            return _rejected(
                r.id,
                "authorization_model_mismatch",
                f"authorization {auth.id} is for model {auth.model}, not {r.model}",
            )
        return auth

    def _rated(self, r: UsageIn, a: AccountRow) -> ChargedRecord | UsageResult:
        """The record rated at the account's price and policy (and its reseller's wholesale
        side), or its rejection when it cannot be priced."""
        try:
            resolved = self.resolve(r.model, r.occurred_at, a)
            policy = self.snap.policy_of(a)
            billing = _bill(r, resolved.price, policy)
            wholesale = None
            if a.parent_id and resolved.wholesale is not None:
                reseller = self.snap.accounts[a.parent_id]
                wholesale = _bill(r, resolved.wholesale.price, self.snap.policy_of(reseller))
        except DomainError as exc:
            return _rejected(r.id, exc.code, exc.detail)
        self._note_priced(a.currency, r.occurred_at)
        return ChargedRecord(
            record=r,
            account=a,
            billing=billing,
            price_source=resolved.source.value,
            card_id=resolved.card_id,
            policy=policy,
            wholesale=wholesale,
        )

    def _expired(self, auth: AuthRow, r: UsageIn) -> bool:
        """An open authorization past its expiry that the record came after: it is released
        (what the expiry job would do) and the record is plain usage. A record made before the
        expiry still captures it, however late it arrives."""
        return auth.expires_at <= self.now and r.occurred_at >= auth.expires_at

    def _note_priced(self, currency: str, at: datetime) -> None:
        prev = self.priced_until.get(currency)
        if prev is None or at > prev:
            self.priced_until[currency] = at

    def _pay(self, rec: ChargedRecord) -> tuple[str, str] | None:
        """Charge a record as plain usage; ``(code, message)`` when it cannot be paid (then
        nothing is taken)."""
        r, a = rec.record, rec.account
        w = self.wallet(a.id)
        d, _, refusal = draw(
            w, r.model, rec.billing.billed, rec.billing.billable_tokens, r.occurred_at
        )
        if d is None:
            code = refusal or "insufficient_funds"
            return code, _refusal_detail(code, a, rec.billing.billed)
        rd: Draw | None = None
        rw = self.reseller_wallet(a)
        if rec.wholesale is not None and rec.wholesale.billed and rw is not None:
            rd, _, _ = draw(
                rw,
                r.model,
                rec.wholesale.billed,
                rec.wholesale.billable_tokens,
                r.occurred_at,
                sources=MONEY_SOURCES,
            )
            if rd is None:
                return (
                    "reseller_float_exhausted",
                    "the reseller's float cannot cover this usage at wholesale",
                )
            apply_draw(rw, rd, r.occurred_at)
        apply_draw(w, d, r.occurred_at)
        rec.draw, rec.reseller_draw = d, rd
        return None

    def _capture(self, auth: AuthRow, rec: ChargedRecord) -> AuthorizationView | None:
        """Pay a record from its authorization: give the reservation back, charge the record as
        usage (what cannot be paid is credited), and for a grant reserve again what it still
        holds. Returns the grant's state after the capture (None for a single-use hold)."""
        r, a = rec.record, rec.account
        w = self.wallet(a.id)
        rw = self.reseller_wallet(a)
        res = auth.reservation
        own_before, reseller_before = self._held(auth)
        give_back(res, auth.account_id, self.snap.wallets, self.snap.lots)
        d, unpaid, _ = draw(
            w,
            r.model,
            rec.billing.billed,
            rec.billing.billable_tokens,
            r.occurred_at,
            partial=True,
        )
        assert d is not None
        rec.billing = _capped(rec.billing, unpaid)
        apply_draw(w, d, r.occurred_at)
        rec.draw = d
        rd: Draw | None = None
        if rec.wholesale is not None and rec.wholesale.billed and rw is not None:
            rd, wunpaid, _ = draw(
                rw,
                r.model,
                rec.wholesale.billed,
                rec.wholesale.billable_tokens,
                r.occurred_at,
                sources=MONEY_SOURCES,
                partial=True,
            )
            assert rd is not None
            rec.wholesale = _capped(rec.wholesale, wunpaid)
            apply_draw(rw, rd, r.occurred_at)
            rec.reseller_draw = rd
        auth.dirty = True
        auth.captures += 1
        if not auth.multi_capture:
            auth.status, auth.usage_record_id, auth.resolved_at = "captured", r.id, self.now
            auth.captured_money, auth.captured_tokens = d.charged, d.package_tokens
            auth.released_money = max(0, auth.held_money - d.charged)
            auth.released_tokens = max(0, auth.held_tokens - d.package_tokens)
            return None
        used = d.package_tokens if auth.token_grant else d.charged
        captured = min(used, own_before)
        if auth.token_grant:
            auth.captured_tokens += captured
        else:
            auth.captured_money += captured
        self._re_reserve(auth, own_before - captured, reseller_before, rd)
        if auth.expires_at <= self.now:  # a late record of an expired grant: close it now
            self._release(auth, "expired")
        return self.view(auth)

    def _held(self, auth: AuthRow) -> tuple[int, int]:
        """What a grant holds now: of its own account (in its unit) and of the reseller."""
        own = reseller = 0
        for lot_id, atoms in auth.reservation.lots.items():
            lot = self.snap.lots[lot_id]
            if lot.account_id == auth.account_id:
                own += atoms
            else:
                reseller += atoms
        if not auth.token_grant:
            own += auth.reservation.overage
        return own, reseller + auth.reservation.reseller_overage

    def _re_reserve(
        self, auth: AuthRow, keep: int, reseller_before: int, reseller_draw: Draw | None
    ) -> None:
        """Reserve ``keep`` again for a grant after a capture (and the reseller's part less
        what the capture drew at wholesale); what the wallet can no longer back is released."""
        a = self.snap.accounts[auth.account_id]
        w = self.wallet(a.id)
        got = self._reserve_into(auth, w, keep, reseller=False)
        if auth.token_grant:
            auth.released_tokens += keep - got
        else:
            auth.released_money += keep - got
        rw = self.reseller_wallet(a)
        if rw is not None and reseller_before:
            spent = reseller_draw.charged if reseller_draw is not None else 0
            self._reserve_into(auth, rw, max(0, reseller_before - spent), reseller=True)

    def _reserve_into(self, auth: AuthRow, w: WalletState, amount: int, *, reseller: bool) -> int:
        """Reserve up to ``amount`` of the grant's kind from ``w``; returns what was reserved."""
        if amount <= 0:
            return 0
        tokens = auth.token_grant and not reseller
        d, _, _ = draw(
            w,
            auth.model,
            0 if tokens else amount,
            amount if tokens else 0,
            self.now,
            sources=GRANT_TOKEN_SOURCES if tokens else GRANT_MONEY_SOURCES,
            use_plan=False,
            partial=True,
            valid_at=auth.expires_at,
        )
        assert d is not None
        reserve(w, d, self.now, auth.reservation, reseller=reseller)
        return d.package_tokens if tokens else d.charged

    def _release(self, auth: AuthRow, status: str) -> None:
        """Give everything back and close the authorization."""
        own, _ = self._held(auth)
        give_back(auth.reservation, auth.account_id, self.snap.wallets, self.snap.lots)
        if auth.multi_capture:
            if auth.token_grant:
                auth.released_tokens += own
            else:
                auth.released_money += own
        else:
            auth.released_money, auth.released_tokens = auth.held_money, auth.held_tokens
        auth.status, auth.resolved_at, auth.dirty = status, self.now, True

    # -- authorizations --

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
        """Reserve up to ``ask`` more for a grant (and the reseller's float at wholesale);
        returns what was granted and, when it is nothing, why."""
        w = self.wallet(a.id)
        d = self._redraw(w, auth, ask, tokens)
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
                d = self._redraw(w, auth, got, tokens)
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

    def _redraw(self, w: WalletState, auth: AuthRow, amount: int, tokens: bool) -> Draw:
        """What the wallet can give a grant of up to ``amount`` (tokens or money), valid until
        the grant expires; nothing is taken yet."""
        d, _, _ = draw(
            w,
            auth.model,
            0 if tokens else amount,
            amount if tokens else 0,
            self.now,
            sources=GRANT_TOKEN_SOURCES if tokens else GRANT_MONEY_SOURCES,
            use_plan=False,
            partial=True,
            valid_at=auth.expires_at,
        )
        assert d is not None
        return d

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
        d = self._redraw(self.wallet(a.id), auth, 1, tokens)
        return (d.package_tokens if tokens else d.charged) > 0

    def increment(self, op: Increment) -> AuthorizationView | DomainError:
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
                f"authorization {auth.id} is {_closed_state(auth, self.now)}; open a new one"
            )
        a = self.snap.accounts[auth.account_id]
        try:
            ask, tokens = _asked(op.amount, op.tokens, a)
        except DomainError as exc:
            return exc
        if tokens != auth.token_grant:
            kind = "tokens" if auth.token_grant else "amount"
            return InvalidRequest(f"authorization {auth.id} grants {kind}; increment with {kind}")
        usage = tuple(self.charge(op)) if op.records else None
        if not auth.is_open:  # a record of the usage so far closed it (it had expired)
            return AuthorizationClosed(f"authorization {auth.id} is {auth.status}")
        if op.ttl is not None:
            auth.expires_at = max(auth.expires_at, self.now + op.ttl)
            auth.dirty = True
        resolved = None
        price = None
        if auth.model is not None:
            try:
                resolved = self.resolve(auth.model, self.now, a)
                price = resolved.price
            except DomainError:
                resolved = None
        auth.requested += ask
        stop = self.stopped(a)
        got, code = (0, stop) if stop else self._grant_more(auth, a, ask, tokens, resolved)
        if got == 0:
            auth.final, auth.dirty = True, True
        # why nothing more could be granted (the grant stays open); cleared when more is
        auth.decline_code = None if got else code
        return self.view(auth, price=price, granted_now=got, usage=usage)

    def release(self, op: Release) -> AuthorizationView | DomainError:
        auth = self.snap.auths.get(op.authorization_id)
        if auth is None or self.account(auth.account_id, op.scope) is None:
            return NotFound(f"authorization {op.authorization_id} does not exist")
        if auth.is_open and (op.status == "voided" or auth.expires_at <= self.now):
            self._release(auth, op.status)
        return self.view(auth)


def view_of(auth: AuthRow, currency: Unit, **extra: Any) -> AuthorizationView:
    """How callers see an authorization. What a grant still reserves is ``granted - captured -
    released`` (every capture, re-reservation and release keeps it so)."""
    if auth.status != "approved":
        remaining = 0
    elif auth.multi_capture:
        granted = auth.held_tokens if auth.token_grant else auth.held_money
        captured = auth.captured_tokens if auth.token_grant else auth.captured_money
        released = auth.released_tokens if auth.token_grant else auth.released_money
        remaining = granted - captured - released
    else:
        remaining = auth.held_money
    return AuthorizationView(
        id=auth.id,
        account_id=auth.account_id,
        status=auth.status,
        multi_capture=auth.multi_capture,
        model=auth.model,
        currency=currency,
        token_grant=auth.token_grant,
        held_money=auth.held_money,
        held_tokens=auth.held_tokens,
        captured_money=auth.captured_money,
        captured_tokens=auth.captured_tokens,
        released_money=auth.released_money,
        released_tokens=auth.released_tokens,
        remaining=remaining,
        captures=auth.captures,
        final=auth.final,
        plan_covered=auth.plan_covered,
        expires_at=auth.expires_at,
        decline_code=auth.decline_code,
        **extra,
    )


def _closed_state(auth: AuthRow, now: datetime) -> str:
    if auth.status == "approved" and auth.expires_at <= now:
        return f"expired (at {auth.expires_at.isoformat()})"
    return auth.status


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
    """Wholesale atoms to reserve per unit granted: per retail atom for money grants, per token
    at the dearest wholesale component for token grants."""
    assert resolved.wholesale is not None
    if tokens:
        return max_atoms_per_token(resolved.wholesale.price)
    return wholesale_ratio(resolved.price, resolved.wholesale.price)


def _bill(r: UsageIn, price: ModelPrice, policy: FailedRequestPolicy) -> Billing:
    rating = rate_tokens(r.tokens, price, tier=r.service_tier, batch=r.batch)
    return apply_policy(
        r.tokens,
        rating.total,
        rating.output,
        policy,
        http_status=r.http_status,
        finish_reason=r.finish_reason,
        truncated=r.truncated,
        rating=rating,
    )


def _capped(billing: Billing, unpaid: int) -> Billing:
    """What a capture could not pay is credited, not billed (``capped_at_hold``)."""
    if not unpaid:
        return billing
    return replace(
        billing,
        billed=billing.billed - unpaid,
        credited=billing.credited + unpaid,
        reason="capped_at_hold",
    )


def _stopped_detail(code: str, a: AccountRow) -> str:
    state = code.removeprefix("account_")
    who = f"account {a.id}" if a.status != "active" else f"the reseller {a.parent_id} of {a.id}"
    if state == "closed":
        return f"{who} is closed; usage is not accepted"
    return (
        f"{who} is suspended; usage is refused until an operator reactivates it"
        " (the record may be sent again then)"
    )


def _rejected(record_id: str, reason: str, detail: str) -> UsageResult:
    return UsageResult(record_id, "rejected", reason=reason, detail=detail)


def _refusal_detail(refusal: str, a: AccountRow, billed: int) -> str:
    if refusal == "plan_quota_exhausted":
        return "the plan's quota is used up and the plan blocks further requests until it resets"
    return (
        f"account {a.id} cannot cover {Amount(billed, a.unit)}"
        f" (prepaid credit and credit limit exhausted)"
    )


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
    """Run operations in order in the caller's transaction (which the caller commits): two
    round trips for the whole list. Domain errors are returned in place of a result, not
    raised, so one operation's error does not undo the others.

    Args:
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
