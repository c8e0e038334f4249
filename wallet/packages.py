"""Token packages bought from the wallet balance."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.ids import new_id
from ledger.journal import Leg, post_entry
from ledger.units import TOKENS, Unit
from plans.catalog import PackageSpec, get_package
from wallet.accounts import EVERYTHING, Scope, get_account
from wallet.burn_order import PACKAGE
from wallet.errors import InvalidRequest
from wallet.ledger_accounts import (
    CustomerLedger,
    HouseLedger,
    book_of,
    currency_of,
    customer_ledger,
    house_ledger,
)
from wallet.lots import check_low_balance, draw_money, money_balance
from wallet.models import Account, CreditLot, PackagePurchase


def buy_package(
    session: Session,
    account_id: str,
    package_id: str,
    *,
    at: datetime | None = None,
    scope: Scope = EVERYTHING,
    from_lot_id: int | None = None,
) -> PackagePurchase:
    """Buy a package with wallet credit.

    The price moves to deferred revenue and a token lot (model scope, expiry) is granted.

    Args:
        session: the caller's transaction.
        account_id: the buying account.
        package_id: the package bought.
        at: when the purchase happens (default: now).
        scope: accounts outside it are unknown to the caller.
        from_lot_id: pay from this one money lot (a card payment's paid lot), not in burn order.

    Raises:
        NotFound: unknown account or package.
        InvalidRequest: the package is priced in another currency.
        InsufficientFunds: the wallet cannot cover the price (nothing changes).
    """
    account = get_account(session, account_id, scope=scope, lock=True)
    spec = get_package(session, package_id)
    unit = currency_of(account)
    _check_currency(spec, account.id, unit)
    when = at or utcnow()
    cust = customer_ledger(session, account)
    house = house_ledger(session, book_of(account), unit)
    before = money_balance(session, cust)
    purchase_id = new_id("pkp")
    entry = post_entry(
        session,
        _purchase_legs(session, account, spec, cust, house, when, from_lot_id),
        description=f"package {package_id} bought ({purchase_id})",
        idempotency_key=f"package:{purchase_id}",
        effective_at=when,
        metadata={"purchase_id": purchase_id, "package_id": package_id, "account_id": account.id},
    )
    lot = _package_lot(spec, account.id, cust.package_tokens.id, purchase_id, when)
    session.add(lot)
    session.flush()
    purchase = PackagePurchase(
        id=purchase_id,
        account_id=account.id,
        package_id=package_id,
        price=spec.price.atoms,
        tokens=spec.tokens,
        lot_id=lot.id,
        entry_id=entry.id,
    )
    session.add(purchase)
    session.flush()
    check_low_balance(session, account, before)
    return purchase


def _purchase_legs(
    session: Session,
    account: Account,
    spec: PackageSpec,
    cust: CustomerLedger,
    house: HouseLedger,
    when: datetime,
    from_lot_id: int | None,
) -> list[Leg]:
    """The price from the wallet to deferred package revenue (when not free), the tokens issued."""
    legs: list[Leg] = []
    if spec.price.atoms:
        draw = draw_money(session, account, spec.price, at=when, from_lot_id=from_lot_id)
        legs += [*draw.legs, Leg(cust.deferred_packages.id, -spec.price)]
    tokens = Amount(spec.tokens, TOKENS)
    return [*legs, Leg(house.tokens_issued.id, tokens), Leg(cust.package_tokens.id, -tokens)]


def _package_lot(
    spec: PackageSpec, account_id: str, tokens_account_id: int, purchase_id: str, when: datetime
) -> CreditLot:
    """The token lot a purchase grants.

    All its tokens, with the price deferred until they are used or expire.
    """
    return CreditLot(
        account_id=account_id,
        kind=PACKAGE,
        unit=TOKENS.code,
        ledger_account_id=tokens_account_id,
        granted=spec.tokens,
        remaining=spec.tokens,
        expires_at=when + timedelta(days=spec.valid_days),
        valid_from=when,
        models=list(spec.models),
        price=spec.price.atoms,
        deferred=spec.price.atoms,
        source_type="package_purchase",
        source_id=purchase_id,
    )


def _check_currency(spec: PackageSpec, account_id: str, unit: Unit) -> None:
    """A package is bought in its own currency.

    Raises:
        InvalidRequest: the account pays in another.
    """
    if spec.currency.code != unit.code:
        raise InvalidRequest(
            f"package {spec.id} is sold in {spec.currency.code};"
            f" account {account_id} pays in {unit.code}"
        )
