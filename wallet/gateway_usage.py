"""The gateway batch's state and usage charging.

Records are claimed, rated, put through the failed-request policy and paid in burn order, or capture
the authorization they name (see :mod:`wallet.gateway`, which adds the authorization operations and
runs the batch).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from ledger.amounts import Amount
from ledger.errors import DomainError
from ledger.units import unit as unit_of
from plans.catalog import FailedRequestPolicy
from plans.price_context import PriceContext, standing_contract
from plans.pricebook import ResolvedPrice
from plans.prices import ModelPrice
from plans.rating import rate_tokens
from wallet.accounts import Scope
from wallet.billing import (
    Billing,
    apply_policy,
)
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
from wallet.gateway_ops import (
    AuthorizationView,
    ChargeUsage,
    Increment,
    UsageResult,
    view_of,
)
from wallet.records import Rejected, UsageIn
from wallet.snapshot import AccountRow, AuthRow, Snapshot
from wallet.writeback import ChargedRecord

#: How far ahead of the server clock a record's ``occurred_at`` may be (gateway clock skew).
MAX_CLOCK_SKEW = timedelta(minutes=5)


class UsageBatch:
    """The in-memory state of one :func:`wallet.gateway.execute` call and the usage it charges.

    Captures of authorizations are included; :class:`wallet.gateway._Batch` adds the
    authorization operations.
    """

    def __init__(self, session: Session, snap: Snapshot, now: datetime | None) -> None:
        """Start a batch on what :func:`wallet.snapshot.load` read.

        Args:
            session: the batch's transaction.
            snap: the locked rows the batch works on in memory.
            now: the batch's instant (default: the snapshot's ``received_at``).
        """
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
        """The price of ``model`` at ``at`` for account ``a`` (one catalog load per currency)."""
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
        """The account's row, or None when it is unknown or outside the caller's ``scope``."""
        a = self.snap.accounts.get(account_id)
        return a if a is not None and scope.allows(a) else None

    def wallet(self, account_id: str) -> WalletState:
        """The account's wallet (lots, quota, overage) as the batch holds it in memory."""
        return self.snap.wallets[account_id]

    def stopped(self, a: AccountRow) -> str | None:
        """Why the account may not be served, or None when it is active.

        ``account_suspended``, ``account_closed``; its reseller's status counts for a sub-account.
        """
        for row in (a, self.snap.accounts.get(a.parent_id) if a.parent_id else None):
            if row is not None and row.status != "active":
                return f"account_{row.status}"
        return None

    def reseller_wallet(self, a: AccountRow) -> WalletState | None:
        """The reseller's wallet for a sub-account, or None for a top-level account."""
        return self.snap.wallets.get(a.parent_id) if a.parent_id else None

    # -- views --

    def view(self, auth: AuthRow, **extra: Any) -> AuthorizationView:
        """The authorization as the API shows it, in its account's unit; ``extra`` fields added."""
        return view_of(auth, self.snap.accounts[auth.account_id].unit, **extra)

    # -- usage --

    def charge(self, op: ChargeUsage | Increment) -> list[UsageResult]:
        """Charge an operation's records in order; one result per record."""
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
        """The authorization a record names, or its rejection.

        Unknown, another account's, or a model-scoped grant of another model.
        """
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
        """The record rated at the account's price and policy, or why it cannot be priced.

        The reseller's wholesale side is rated too; a record that cannot be priced is rejected.
        """
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
        """An open authorization past its expiry that the record came after.

        It is released (what the expiry job would do) and the record is plain usage. A record made
        before the expiry still captures it, however late it arrives.
        """
        return auth.expires_at <= self.now and r.occurred_at >= auth.expires_at

    def _note_priced(self, currency: str, at: datetime) -> None:
        prev = self.priced_until.get(currency)
        if prev is None or at > prev:
            self.priced_until[currency] = at

    def _pay(self, rec: ChargedRecord) -> tuple[str, str] | None:
        """Charge a record as plain usage.

        ``(code, message)`` when it cannot be paid (then nothing is taken).
        """
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
            rd, _ = self._wholesale_draw(rw, rec, partial=False)
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
        """Pay a record from its authorization.

        Give the reservation back, charge the record as usage (what cannot be paid is credited), and
        for a grant reserve again what it still holds. Returns the grant's state after the capture
        (None for a single-use hold).
        """
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
            rd, wunpaid = self._wholesale_draw(rw, rec, partial=True)
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
        """Reserve ``keep`` again for a grant after a capture, releasing what cannot be backed.

        The reseller's part is reserved again less what the capture drew at wholesale; what the
        wallet can no longer back is released.
        """
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
        d = self._grant_draw(w, auth, amount, tokens)
        reserve(w, d, self.now, auth.reservation, reseller=reseller)
        return d.package_tokens if tokens else d.charged

    def _grant_draw(self, w: WalletState, auth: AuthRow, amount: int, tokens: bool) -> Draw:
        """What ``w`` can give a grant of up to ``amount`` (tokens or money); nothing is taken.

        Only credit valid until the grant expires counts.
        """
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

    def _wholesale_draw(
        self, rw: WalletState, rec: ChargedRecord, *, partial: bool
    ) -> tuple[Draw | None, int]:
        """What the reseller's float pays of a record at wholesale, and what it leaves unpaid.

        Money only; nothing is taken yet.
        """
        assert rec.wholesale is not None
        rd, unpaid, _ = draw(
            rw,
            rec.record.model,
            rec.wholesale.billed,
            rec.wholesale.billable_tokens,
            rec.record.occurred_at,
            sources=MONEY_SOURCES,
            partial=partial,
        )
        return rd, unpaid

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
