"""Starting a card payment.

A pending top-up (or, for an invoice, none), a payment row and a hosted checkout page.

The pending top-up, the payment and the checkout session's URL are committed together by the
caller. The provider call happens inside that transaction, after our rows are written, with an
idempotency key derived from the payment id (so the SDK's network retries cannot create two
sessions). If our commit fails after the provider created the session, nobody ever saw its URL:
it expires unpaid, and a webhook naming an unknown payment is stored and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from invoicing.errors import InvoiceState, PaymentTooLarge
from invoicing.lifecycle import open_balance
from invoicing.models import Invoice
from invoicing.payments.gateway import CheckoutRequest, PaymentGateway
from invoicing.payments.models import Payment
from ledger.amounts import Amount
from ledger.base import lock_row, utcnow
from ledger.errors import InvalidAmount, NotFound
from ledger.ids import new_id
from ledger.units import currency
from plans.catalog import get_package, get_plan
from wallet.accounts import EVERYTHING, Scope, get_account
from wallet.errors import Conflict, InvalidRequest
from wallet.ledger_accounts import currency_of
from wallet.models import Account
from wallet.subscriptions import get_live_subscription
from wallet.topups import create_pending_topup, parse_money

Purpose = Literal["topup", "package", "plan"]


@dataclass(frozen=True, slots=True)
class CheckoutUrls:
    """Where the provider sends the customer after paying or giving up."""

    success_url: str
    cancel_url: str


@dataclass(frozen=True, slots=True)
class StartedPayment:
    """A payment and whether it was a replay of an earlier request with the same key."""

    payment: Payment
    replayed: bool


def _whole_minor(amount: Amount, what: str) -> int:
    try:
        minor = amount.minor_units()
    except InvalidAmount as exc:
        raise InvalidRequest(
            f"{what} is {amount}, which is not a whole number of {amount.unit.code} minor units"
            " and cannot be charged by card"
        ) from exc
    if minor <= 0:
        raise InvalidRequest(f"{what} is free: nothing to pay by card")
    return minor


def _product(
    session: Session,
    account: Account,
    purpose: Purpose,
    *,
    amount: str | None,
    package_id: str | None,
    plan_id: str | None,
) -> tuple[Amount, str | None, str]:
    """What is bought.

    Its price, its reference (package or plan id) and its name on the checkout page.
    """
    unit = currency_of(account)
    if purpose == "topup":
        if amount is None:
            raise InvalidRequest("a card top-up needs an amount")
        return parse_money(amount, account, what="amount"), None, "Prepaid credit"
    if purpose == "package":
        if package_id is None:
            raise InvalidRequest("a card package purchase needs a package_id")
        pkg = get_package(session, package_id)
        if pkg.currency.code != unit.code:
            raise InvalidRequest(
                f"package {package_id} is sold in {pkg.currency.code};"
                f" account {account.id} pays in {unit.code}"
            )
        return pkg.price, pkg.id, f"{pkg.name} (token package)"
    if plan_id is None:
        raise InvalidRequest("a card plan subscription needs a plan_id")
    plan = get_plan(session, plan_id)
    if plan.currency.code != unit.code:
        raise InvalidRequest(
            f"plan {plan_id} is priced in {plan.currency.code}, the account in {unit.code}"
        )
    live = get_live_subscription(session, account.id)
    if live is not None:
        raise Conflict(f"account {account.id} already has subscription {live.id}; cancel it first")
    return plan.monthly_fee, plan.id, f"{plan.name} (first month)"


def _checkout(
    session: Session,
    gateway: PaymentGateway,
    payment: Payment,
    *,
    urls: CheckoutUrls,
    product: str,
    metadata: dict[str, str],
) -> StartedPayment:
    """Store the new pending payment and open its hosted checkout at the provider.

    Opening the checkout is idempotent per payment; the checkout's session, URL and payment intent
    are kept on the payment.
    """
    session.add(payment)
    session.flush()
    checkout = gateway.create_checkout(
        CheckoutRequest(
            payment_id=payment.id,
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            product_name=product,
            success_url=urls.success_url,
            cancel_url=urls.cancel_url,
            idempotency_key=f"tokenwallet-checkout-{payment.id}",
            metadata={"tw_payment_id": payment.id, "tw_account_id": payment.account_id, **metadata},
        )
    )
    payment.checkout_session_id = checkout.id
    payment.checkout_url = checkout.url
    payment.checkout_expires_at = checkout.expires_at
    payment.payment_intent_id = checkout.payment_intent_id
    payment.updated_at = utcnow()
    session.flush()
    return StartedPayment(payment, False)


def _pending_payment(
    gateway: PaymentGateway,
    payment_id: str,
    account: Account,
    money: Amount,
    minor: int,
    *,
    purpose: str,
    purpose_ref: str | None,
    topup_id: str | None,
) -> Payment:
    """A new pending payment row (not added to the session)."""
    return Payment(
        id=payment_id,
        account_id=account.id,
        provider=gateway.name,
        purpose=purpose,
        purpose_ref=purpose_ref,
        topup_id=topup_id,
        status="pending",
        currency=money.unit.code,
        amount=money.atoms,
        amount_minor=minor,
        refunded_minor=0,
    )


def _replayed(
    session: Session, topup_id: str, purpose_ref: str | None, key: str | None
) -> StartedPayment:
    """The payment an earlier request with the same idempotency key started.

    Raises:
        Conflict: the key was used for another card payment.
    """
    prior = session.scalars(select(Payment).where(Payment.topup_id == topup_id)).one_or_none()
    if prior is not None and prior.purpose_ref == purpose_ref:
        return StartedPayment(prior, True)
    raise Conflict(f"idempotency key {key!r} was used for another card payment")


def start_card_payment(
    session: Session,
    gateway: PaymentGateway,
    account_id: str,
    *,
    purpose: Purpose,
    urls: CheckoutUrls,
    amount: str | None = None,
    package_id: str | None = None,
    plan_id: str | None = None,
    idempotency_key: str | None = None,
    scope: Scope = EVERYTHING,
) -> StartedPayment:
    """Start paying by card for a top-up (``amount``), a package or a plan's first month.

    Nothing is credited here: the wallet is credited only when the verified webhook says the
    payment succeeded (see :mod:`invoicing.payments.events`).

    Raises:
        NotFound: unknown account (or not visible), package or plan.
        InvalidAmount: a top-up amount that is not positive or finer than the minor unit.
        InvalidRequest: a sub-account (its money is collected by its reseller), another
            currency, or a price that cannot be charged by card.
        Conflict: a plan while the account already has a live subscription.
        IdempotencyConflict: the key was used for a different payment.
        PaymentProviderError: the provider refused or could not be reached (nothing is kept).
    """
    account = get_account(session, account_id, scope=scope)
    money, purpose_ref, product = _product(
        session, account, purpose, amount=amount, package_id=package_id, plan_id=plan_id
    )
    minor = _whole_minor(money, "the price" if purpose != "topup" else "the amount")
    payment_id = new_id("pay")
    what = f"{purpose} {purpose_ref}" if purpose_ref else purpose
    started = create_pending_topup(
        session,
        account.id,
        amount=money,
        method="stripe",
        reference=f"card payment {payment_id} ({what})",
        idempotency_key=f"card:{purpose}:{idempotency_key}" if idempotency_key else None,
        scope=scope,
    )
    if started.replayed:
        return _replayed(session, started.topup.id, purpose_ref, idempotency_key)
    payment = _pending_payment(
        gateway,
        payment_id,
        account,
        money,
        minor,
        purpose=purpose,
        purpose_ref=purpose_ref,
        topup_id=started.topup.id,
    )
    metadata = {"tw_topup_id": started.topup.id, "tw_purpose": purpose}
    return _checkout(session, gateway, payment, urls=urls, product=product, metadata=metadata)


def _lock_payable_invoice(
    session: Session, invoice_id: str, scope: Scope
) -> tuple[Invoice, Account]:
    """The invoice, locked, and its account (visible to ``scope``, checked before the lock).

    Raises:
        NotFound: no such invoice, or its account is not visible.
        InvoiceState: the invoice is not finalized, or nothing is left to pay on it.
    """
    found = session.get(Invoice, invoice_id)
    if found is None:
        raise NotFound(f"invoice {invoice_id} does not exist")
    account = get_account(session, found.account_id, scope=scope)  # visibility before the lock
    invoice = lock_row(session, Invoice, invoice_id)
    label = invoice.number or invoice.id
    if invoice.status != "finalized":
        why = {
            "draft": "is a draft: it is not final yet and cannot be paid",
            "void": "is void: nothing is owed on it",
            "paid": "is paid: nothing is left to pay",
        }.get(invoice.status, f"is {invoice.status}")
        raise InvoiceState(f"invoice {label} {why}", invoice_status=invoice.status)
    if open_balance(invoice) <= 0:
        raise InvoiceState(
            f"invoice {label} has nothing left to pay", invoice_status=invoice.status
        )
    return invoice, account


def _invoice_amount(invoice: Invoice, account: Account, amount: str | None) -> Amount:
    """What to charge on the invoice: ``amount`` (at most what is owed) or all that is owed.

    Raises:
        PaymentTooLarge: ``amount`` is more than what is still owed.
    """
    owed = Amount(open_balance(invoice), currency(invoice.currency))
    if amount is None:
        return owed
    money = parse_money(amount, account, what="amount")
    if money > owed:
        raise PaymentTooLarge(
            f"invoice {invoice.number or invoice.id} has {owed} left to pay; cannot take {money}",
            open_balance=owed.format(),
        )
    return money


def _open_checkout_of(
    session: Session, invoice: Invoice, minor: int, at: datetime
) -> Payment | None:
    """A pending checkout for the same amount of the invoice that has not expired yet."""
    open_checkout = session.scalars(
        select(Payment)
        .where(
            Payment.purpose == "invoice",
            Payment.purpose_ref == invoice.id,
            Payment.status == "pending",
            Payment.amount_minor == minor,
            Payment.checkout_url.is_not(None),
        )
        .order_by(Payment.created_at.desc())
        .limit(1)
    ).one_or_none()
    if open_checkout is not None and (
        open_checkout.checkout_expires_at is None or open_checkout.checkout_expires_at > at
    ):
        return open_checkout
    return None


def start_invoice_payment(
    session: Session,
    gateway: PaymentGateway,
    invoice_id: str,
    *,
    urls: CheckoutUrls,
    amount: str | None = None,
    scope: Scope = EVERYTHING,
    now: datetime | None = None,
) -> StartedPayment:
    """Start paying a finalized invoice by card.

    A checkout for what is still owed on it (or for ``amount``, a part of it), in the invoice
    currency's minor units.

    Nothing is recorded on the invoice here: the payment is recorded (cash:stripe ->
    receivable:invoiced) when the verified webhook says it succeeded
    (:func:`invoicing.payments.settlement.settle_payment`). No top-up is created.

    The invoice row is locked while the checkout is created, so two starts for one invoice
    run one after the other; a second start for the same amount while a checkout is still
    open returns that checkout (``replayed``) instead of opening another one, so a customer who
    clicks twice pays once.

    Raises:
        NotFound: no such invoice, or its account is not visible to the caller.
        InvoiceState: the invoice is a draft, void or already paid (nothing is owed).
        PaymentTooLarge: ``amount`` is more than what is still owed.
        InvalidAmount: ``amount`` is not positive or finer than the currency's minor unit.
        InvalidRequest: the amount owed cannot be charged by card (not whole minor units).
        PaymentProviderError: the provider refused or could not be reached (nothing is kept).
    """
    invoice, account = _lock_payable_invoice(session, invoice_id, scope)
    label = invoice.number or invoice.id
    money = _invoice_amount(invoice, account, amount)
    minor = _whole_minor(money, f"the amount owed on invoice {label}")
    prior = _open_checkout_of(session, invoice, minor, now or utcnow())
    if prior is not None:
        return StartedPayment(prior, True)
    payment = _pending_payment(
        gateway,
        new_id("pay"),
        account,
        money,
        minor,
        purpose="invoice",
        purpose_ref=invoice.id,
        topup_id=None,
    )
    metadata = {"tw_invoice_id": invoice.id, "tw_invoice_number": label, "tw_purpose": "invoice"}
    return _checkout(
        session, gateway, payment, urls=urls, product=f"Invoice {label}", metadata=metadata
    )
