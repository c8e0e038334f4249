"""Match one day of provider balance transactions with our ``cash:stripe`` postings (pure).

Per currency, the provider's net (amount less fee) is compared with the ledger's, and the
differences are listed per payment intent (or per unmatched item). No database.

A balance transaction is keyed by its payment intent (else ``<type>:<source or id>``); a ledger
entry by the ``payment_intent_id`` of its metadata, else by the payment intent of the top-up it
names, else ``entry:<id>``. Payouts, transfers and balance top-ups are not booked by tokenwallet:
they are counted apart (``not_booked``) and left out of the comparison.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from invoicing.payments.gateway import BalanceTransaction
from ledger.amounts import Amount
from ledger.units import Unit
from ledger.units import unit as unit_of

#: Balance transaction types that move money between the provider balance and our bank (or
#: other balances): not booked by tokenwallet, reported apart.
NOT_BOOKED_TYPES = frozenset(
    {
        "payout",
        "payout_cancel",
        "payout_failure",
        "payout_minimum_balance_hold",
        "payout_minimum_balance_release",
        "transfer",
        "transfer_cancel",
        "transfer_failure",
        "transfer_refund",
        "topup",
        "topup_reversal",
    }
)


@dataclass(frozen=True, slots=True)
class DayReport:
    """One currency's reconciliation of one day (amounts in atoms of the currency)."""

    day: date
    currency: str
    provider_net: Amount
    provider_fees: Amount
    ledger_net: Amount
    difference: Amount
    transactions: int
    details: dict[str, Any]

    @property
    def balanced(self) -> bool:
        """True when the provider and the ledger agree for the day."""
        return self.difference.is_zero()


@dataclass(frozen=True, slots=True)
class LedgerItem:
    """One ledger entry's movement of ``cash:stripe`` on the day (atoms) and its metadata."""

    entry_id: int
    meta: Mapping[str, Any]
    amount: int


@dataclass
class _ProviderSide:
    """The provider's balance transactions of one currency, summed."""

    net: int = 0
    fees: int = 0
    count: int = 0


def _provider_side(
    bts: Sequence[BalanceTransaction], code: str, unit: Unit
) -> tuple[_ProviderSide, dict[str, int], dict[str, Any]]:
    """Sum the provider's transactions of ``code``.

    Totals (minor units), net per reference (atoms) and the counts per type (booked and not booked).
    """
    side = _ProviderSide()
    per_ref: dict[str, int] = defaultdict(int)
    by_type: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    not_booked: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for bt in bts:
        if bt.currency != code:
            continue
        if bt.type in NOT_BOOKED_TYPES:
            not_booked[bt.type]["count"] += 1
            not_booked[bt.type]["amount_minor"] += bt.amount_minor
            continue
        side.count += 1
        net = bt.amount_minor - bt.fee_minor
        side.net += net
        side.fees += bt.fee_minor
        by_type[bt.type]["count"] += 1
        by_type[bt.type]["amount_minor"] += bt.amount_minor
        by_type[bt.type]["fee_minor"] += bt.fee_minor
        per_ref[bt.payment_intent_id or f"{bt.type}:{bt.source_id or bt.id}"] += (
            net * unit.atoms_per_minor
        )
    counts = {
        "by_type": {k: dict(v) for k, v in sorted(by_type.items())},
        "not_booked": {k: dict(v) for k, v in sorted(not_booked.items())},
    }
    return side, per_ref, counts


def _ledger_side(
    items: Sequence[LedgerItem], topup_pis: Mapping[str, str | None]
) -> tuple[int, dict[str, int]]:
    """The ledger's net (atoms) and its net per reference."""
    per_ref: dict[str, int] = defaultdict(int)
    for r in items:
        pi = r.meta.get("payment_intent_id") or topup_pis.get(str(r.meta.get("topup_id")))
        per_ref[pi or f"entry:{r.entry_id}"] += r.amount
    return sum(r.amount for r in items), per_ref


def mismatches(
    provider: Mapping[str, int], ledger: Mapping[str, int], unit: Unit
) -> list[dict[str, str]]:
    """The references whose provider and ledger nets differ, in reference order."""
    return [
        {
            "ref": ref,
            "provider": Amount(provider.get(ref, 0), unit).format(),
            "ledger": Amount(ledger.get(ref, 0), unit).format(),
            "difference": Amount(provider.get(ref, 0) - ledger.get(ref, 0), unit).format(),
        }
        for ref in sorted(set(provider) | set(ledger))
        if provider.get(ref, 0) != ledger.get(ref, 0)
    ]


def reconcile_currency(
    day: date,
    code: str,
    bts: Sequence[BalanceTransaction],
    items: Sequence[LedgerItem],
    topup_pis: Mapping[str, str | None],
) -> DayReport:
    """One currency's reconciliation of a day.

    The provider's transactions against the ledger's ``cash:stripe`` items (``topup_pis``: the
    payment intent of each top-up id).
    """
    unit = unit_of(code)
    side, provider, counts = _provider_side(bts, code, unit)
    ledger_net, ledger = _ledger_side(items, topup_pis)
    net_atoms = side.net * unit.atoms_per_minor
    return DayReport(
        day=day,
        currency=code,
        provider_net=Amount(net_atoms, unit),
        provider_fees=Amount(side.fees * unit.atoms_per_minor, unit),
        ledger_net=Amount(ledger_net, unit),
        difference=Amount(net_atoms - ledger_net, unit),
        transactions=side.count,
        details={**counts, "mismatches": mismatches(provider, ledger, unit)},
    )
