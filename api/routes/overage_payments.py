"""A reseller's sub-accounts.

Payments its customers made for their overage, and the statement of what was billed, paid and is
open (``wallet/overage_payments.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, Request, get
from litestar.datastructures import State
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.idempotency import idempotent_post
from api.schemas import DecimalString, IdempotencyKey, Money, scope_of
from invoicing.periods import Period
from invoicing.reports import sub_account_statement
from ledger.units import unit as unit_of
from wallet.accounts import get_account
from wallet.overage_payments import record_overage_payment


class OveragePaymentIn(BaseModel):
    """Money the reseller collected from its customer for the sub-account's overage.

    ``reference`` identifies the payment (the same reference and amount again return it).
    """

    model_config = ConfigDict(extra="forbid")
    amount: DecimalString
    reference: str = Field(min_length=1, max_length=200)
    received_at: datetime | None = None


class OveragePaymentOut(BaseModel):
    """A recorded overage payment and what the sub-account still owes after it."""

    id: str
    object: str = "overage_payment"
    account_id: str
    reseller_id: str
    amount: Money
    reference: str
    received_at: datetime
    open: Money


def _visible(account_id: str, db: Session, principal: Principal) -> None:
    """Refuse an account the key cannot see (404)."""
    get_account(db, account_id, scope=scope_of(principal))


class OveragePaymentsController(Controller):
    """``/v1/accounts/{account_id}/overage-payments`` and ``.../statement``.

    For the sub-account's reseller (and finance, admins).
    """

    path = "/v1/accounts/{account_id:str}"
    tags = ["resellers"]
    guards = [requires("reseller", "finance")]

    @idempotent_post("/overage-payments", check=_visible)
    def record(
        self,
        request: Request[Principal, Principal, State],
        account_id: str,
        data: OveragePaymentIn,
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> OveragePaymentOut:
        """Record a payment of the sub-account's overage; at most what is owed.

        Booked in the reseller's book: ``cash:collected`` / ``receivable:unbilled``. 422
        ``payment_exceeds_owed``.
        """
        r = record_overage_payment(
            db,
            account_id,
            amount=data.amount,
            reference=data.reference,
            received_at=data.received_at,
            scope=scope_of(principal),
        )
        unit = unit_of(r.payment.currency)
        return OveragePaymentOut(
            id=r.payment.id,
            account_id=r.payment.account_id,
            reseller_id=r.payment.reseller_id,
            amount=Money.atoms(r.payment.amount, unit),
            reference=r.payment.reference,
            received_at=r.payment.received_at,
            open=Money.of(r.open),
        )

    @get("/statement", sync_to_thread=True)
    def statement(
        self, account_id: str, period: str, db: Session, principal: Principal
    ) -> dict[str, Any]:
        """The sub-account's month.

        Overage billed, paid, open (``summary``), and its payments (``rows``).
        """
        get_account(db, account_id, scope=scope_of(principal))
        return sub_account_statement(
            db, account_id=account_id, period=Period.parse(period)
        ).to_json()
