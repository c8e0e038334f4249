"""A small operator for invoicing tests.

One model, a package, a plan, a reseller price book, and helpers that charge usage at chosen times
(no wall clock anywhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from invoicing.models import Invoice, InvoiceLine
from invoicing.periods import Period
from invoicing.profiles import create_tax_profile, set_billing_profile
from ledger.amounts import Amount
from ledger.units import currency
from plans import catalog
from plans.catalog import create_rate_card, create_reseller_price_book
from wallet.accounts import create_account
from wallet.charging import UsageIn, charge_batch
from wallet.models import Account
from wallet.normalize import Tokens
from wallet.packages import buy_package
from wallet.subscriptions import start_subscription
from wallet.topups import record_topup

USD = currency("USD")
JAN = datetime(2026, 1, 1, tzinfo=UTC)
MAR = Period(2026, 3)
APR = Period(2026, 4)


def at(day: int, hour: int = 12, period: Period = MAR) -> datetime:
    return period.start + timedelta(days=day - 1, hours=hour)


def usd(value: str) -> Amount:
    return Amount.parse(value, USD)


@dataclass
class Usage:
    """Charges usage records (1,000 in + 1,000 out = 0.018 USD at list price by default)."""

    factory: sessionmaker[Session]
    n: int = 0

    def __call__(
        self,
        account: Account | str,
        occurred: datetime,
        *,
        received: datetime | None = None,
        count: int = 1,
        input_tokens: int = 1000,
        output_tokens: int = 1000,
        http_status: int = 200,
    ) -> list[str]:
        account_id = account if isinstance(account, str) else account.id
        records = []
        for _ in range(count):
            self.n += 1
            records.append(
                UsageIn(
                    id=f"u{self.n}",
                    account_id=account_id,
                    model="m",
                    occurred_at=occurred,
                    tokens=Tokens(input_tokens=input_tokens, output_tokens=output_tokens),
                    http_status=http_status,
                )
            )
        with self.factory.begin() as s:
            results = charge_batch(s, records, now=received or occurred)
        return [r.status for r in results]


@pytest.fixture
def usage(session_factory) -> Usage:
    return Usage(session_factory)


@pytest.fixture
def shop(session_factory):
    """The catalog of :func:`stock_shop`; returns the session factory."""
    stock_shop(session_factory)
    return session_factory


def stock_shop(session_factory) -> None:
    """Catalog: model m, a 10 % bonus from 100.00, package pk, plan coder, tax profile vat20.

    USD 3 in / 15 out per Mtok. 9.00 for 1M tokens of m, 30 days. 20.00 a month, 2 requests a month,
    then the wallet.
    """
    with session_factory.begin() as s:
        catalog.create_model(s, id="m", provider="acme", display_name="M")
        create_rate_card(
            s,
            currency="USD",
            effective_from=JAN,
            prices=[{"model": "m", "input_per_mtok": "3", "output_per_mtok": "15"}],
        )
        catalog.create_topup_bonus_rule(
            s,
            currency="USD",
            tiers=[{"min_amount": "100.00", "bonus_pct": "10"}],
            effective_from=JAN,
        )
        catalog.create_package(
            s,
            id="pk",
            name="Starter 1M",
            currency="USD",
            price="9.00",
            tokens=1_000_000,
            valid_days=30,
            models=["m"],
        )
        catalog.create_plan(
            s,
            id="coder",
            name="Coder",
            currency="USD",
            monthly_fee="20.00",
            windows=[{"kind": "monthly", "unit": "requests", "limit": 2}],
            on_exhausted="wallet",
        )
        create_tax_profile(s, id="vat20", name="VAT 20 %", rate_pct="20")


def new_account(factory, name: str, **kw) -> Account:
    billing = kw.pop("billing", None)
    with factory.begin() as s:
        acc = create_account(s, name=name, currency="USD", **kw)
        if billing:
            set_billing_profile(s, acc, billing)
    return acc


def topup(factory, account: Account, amount: str, when: datetime, method="bank_transfer"):
    with factory.begin() as s:
        record_topup(s, account.id, amount=amount, method=method, at=when)


def package(factory, account: Account, when: datetime):
    with factory.begin() as s:
        return buy_package(s, account.id, "pk", at=when)


def subscribe(factory, account: Account, when: datetime):
    with factory.begin() as s:
        return start_subscription(s, account.id, "coder", at=when)


def reseller_book(factory, reseller: Account, markup: str = "100"):
    with factory.begin() as s:
        create_reseller_price_book(
            s,
            reseller_account_id=reseller.id,
            currency="USD",
            markup_pct=markup,
            effective_from=JAN,
        )


CLOSE_AT = APR.start + timedelta(days=1)


def money(atoms: int) -> str:
    return Amount(atoms, USD).format()


def lines_of(session, invoice_id):
    return session.scalars(
        select(InvoiceLine)
        .where(InvoiceLine.invoice_id == invoice_id)
        .order_by(InvoiceLine.position)
    ).all()


def by_account(session, period=MAR):
    return {
        inv.account_id: inv
        for inv in session.scalars(select(Invoice).where(Invoice.period == str(period)))
    }


@pytest.fixture
def month(shop, usage):
    """March 2026 of three billing accounts.

    Prepaid Acme (package, plan), postpaid Globex (net 30, VAT 20 %), reseller Resell with two
    sub-accounts.
    """
    f = shop
    acme = new_account(f, "Acme")
    globex = new_account(
        f,
        "Globex",
        credit_limit="50",
        billing={"net_terms_days": 30, "tax_profile_id": "vat20", "legal_name": "Globex GmbH"},
    )
    resell = new_account(f, "Resell", kind="reseller", credit_limit="100")
    reseller_book(f, resell)
    s1 = new_account(f, "Sub One", parent_id=resell.id)
    s2 = new_account(f, "Sub Two", parent_id=resell.id)
    topup(f, acme, "100.00", at(1))
    package(f, acme, at(2))
    subscribe(f, acme, at(2, 13))
    assert usage(acme, at(5), count=3) == ["charged"] * 3  # 2 plan requests, 1 from the package
    assert usage(acme, at(5, 14), http_status=502) == ["charged"]  # not billed
    assert usage(globex, at(10), count=5) == ["charged"] * 5  # 5 x 0.018 overage
    assert usage(globex, at(11), input_tokens=333_333, output_tokens=1) == ["charged"]
    assert usage(globex, at(11, 13), http_status=502) == ["charged"]
    topup(f, resell, "10.00", at(1))
    topup(f, s1, "50.00", at(1), method="reseller")
    topup(f, s2, "50.00", at(1), method="reseller")
    big = {"input_tokens": 2_000_000, "output_tokens": 200_000}  # wholesale 9.00, retail 18.00
    assert usage(s1, at(20), **big) == ["charged"]
    assert usage(s2, at(21), **big) == ["charged"]  # float: 1.00 paid + 8.00 overage
    assert usage(s2, at(21, 13), http_status=502) == ["charged"]
    return {"acme": acme, "globex": globex, "resell": resell, "s1": s1, "s2": s2}
