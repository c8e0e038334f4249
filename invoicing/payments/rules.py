"""Card payment rules (pure, no database).

How much finance may refund, what a dispute's status means and how much of an invoice a dispute
holds.

Finance refunds at most what the payment can give back without creating a debt: the unspent
paid credit of its top-up (for an invoice payment, also what it recorded on the invoice, which
is then owed again); without an amount, all of it.

A dispute is *open* until the provider reports it won (or an inquiry closed without one) or
lost. While it is open, the part of an invoice payment a loss would take from the invoice is
marked disputed on the invoice: the disputed amount less the paid credit frozen for it (a loss
takes that credit first), at most what the payment recorded on the invoice.
"""

from __future__ import annotations

from typing import Literal

from ledger.amounts import Amount
from wallet.errors import RefundTooLarge

#: Dispute statuses that end a dispute in the customer's favour (the money stays with us).
WON_STATUSES = frozenset({"won", "warning_closed"})
#: Dispute statuses that end a dispute in the card holder's favour (the money left).
LOST_STATUSES = frozenset({"lost"})

DisputeStage = Literal["open", "won", "lost"]


def dispute_stage(status: str) -> DisputeStage:
    """Where a dispute stands given the provider's status."""
    if status in WON_STATUSES:
        return "won"
    if status in LOST_STATUSES:
        return "lost"
    return "open"


def invoice_dispute_share(disputed: int, frozen_paid: int, on_invoice: int) -> int:
    """What a loss would take from the invoice, in atoms.

    The disputed amount less the paid credit frozen for it, at most what the payment recorded on the
    invoice, never negative.
    """
    return max(min(disputed - frozen_paid, on_invoice), 0)


def funds_moved(balance_transaction_amount: int) -> int:
    """The funds a dispute's balance transaction moved to ``cash:stripe_disputed``, in minor units.

    Positive when the provider withdrew them, negative when it gave them back.
    """
    return -balance_transaction_amount


def refund_amount(wanted: Amount | None, refundable: Amount, why: str) -> Amount:
    """What finance refunds: ``wanted``, or everything ``refundable`` when None.

    Args:
        wanted: the amount asked for; None for everything refundable.
        refundable: what the payment can still give back.
        why: what the payment can give back and why, for the refusal.

    Raises:
        RefundTooLarge: more than ``refundable``, or nothing to refund.
    """
    if wanted is None:
        if refundable.atoms == 0:
            raise RefundTooLarge(f"{why}: nothing left to refund", unspent=refundable.format())
        return refundable
    if wanted > refundable:
        raise RefundTooLarge(
            f"{why}; cannot refund {wanted} (the customer spent the rest)",
            unspent=refundable.format(),
        )
    return wanted
