"""Which price applies to an account's usage, from the database.

:class:`PriceContext` loads what a batch of usage needs once (every list card, contract and
reseller book of a currency, cached per process and catalog version) and then resolves each
record in memory with :func:`plans.pricebook.resolve_price`; :func:`resolve_account_price`
does the same for one record.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.base import database_key, utcnow
from ledger.units import Unit
from plans._db import check_aware, check_models, money_unit
from plans.contracts import contract_specs, pure_contract
from plans.discounts import standing_contract
from plans.markups import contract_prices
from plans.models import ContractRow, RateCardRow, ResellerPriceBookRow
from plans.pricebook import Contract, ResolvedPrice, resolve_price
from plans.prices import RateCard
from plans.rate_cards import cards_of, load_rate_cards
from plans.reseller_books import ResellerPriceBook, books_of
from plans.watermark import catalog_version

__all__ = [
    "PriceContext",
    "check_standing_discounts",
    "resolve_account_price",
    "standing_contract",
]


def resolve_account_price(
    session: Session,
    *,
    model: str,
    at: datetime,
    currency: Unit | str,
    account_id: str,
    reseller_account_id: str | None = None,
    standing_discounts: Iterable[Mapping[str, object]] = (),
) -> ResolvedPrice:
    """The price of ``model`` for an account at ``at``, and where it came from.

    Loads the account's contract in force, the reseller's retail book in force (for a
    sub-account) and the list card in force, then applies
    :func:`plans.pricebook.resolve_price`: contract -> reseller retail -> list. For a
    sub-account the result's ``wholesale`` is the reseller's own price (its contract, else
    list), also when the reseller has no retail book (the sub-account then pays list).
    To price many records, load a :class:`PriceContext` once instead.

    Args:
        session: the caller's session (read only).
        model: the model id.
        at: aware instant the usage occurred.
        currency: the account's currency.
        account_id: the account whose usage is priced.
        reseller_account_id: the parent reseller of a sub-account, else ``None``.
        standing_discounts: the account's own ``{"model"?, "pct"}`` discounts (see
            :meth:`PriceContext.resolve`).

    Raises:
        InvalidCatalog: a naive ``at``.
        NoRateInForce: a list price is needed and no card is in force at ``at``.
        UnknownModel: the price book that applies does not price ``model``.
        InvalidPrice: a discount or markup that would not rate exactly.
    """
    at = check_aware(at, what="at")
    ids = [account_id] + ([reseller_account_id] if reseller_account_id else [])
    ctx = PriceContext.load(session, currency, account_ids=ids)
    return ctx.resolve(
        model=model,
        at=at,
        account_id=account_id,
        reseller_account_id=reseller_account_id,
        standing=standing_contract(account_id, standing_discounts),
    )


def check_standing_discounts(
    session: Session,
    currency: Unit | str,
    account_id: str,
    discounts: Iterable[Mapping[str, object]],
) -> None:
    """Refuse standing discounts that would not rate exactly.

    They are checked on the list cards in force now or later, like a contract without a locked
    card is checked when created.

    Raises:
        InvalidPrice: a discounted price would not rate exactly.
        UnknownModel: a discounted model that is not in the catalog.
    """
    items = list(discounts)
    contract = standing_contract(account_id, items)
    if contract is None:
        return
    check_models(session, [str(d["model"]) for d in items if d.get("model")], what="discounts")
    unit = money_unit(currency)
    contract_prices(session, contract, unit, utcnow())


def _latest_before(versions: list[_V], at: datetime, key: Callable[[_V], datetime]) -> _V | None:
    """The version with the greatest ``key <= at`` from a list sorted by ``key``."""
    i = bisect_right([key(v) for v in versions], at)
    return versions[i - 1] if i else None


_V = TypeVar("_V")


@dataclass
class _CachedCatalog:
    """One process's copy of a currency's catalog at one version.

    Every list card, every contract version and every reseller price book (contracts and books
    are few next to accounts, and any of them changing moves the version).
    """

    version: int
    cards: list[RateCard]
    contracts: dict[str, list[Contract]] = field(default_factory=dict)
    books: dict[str, list[ResellerPriceBook]] = field(default_factory=dict)


_CACHE: dict[tuple[str, str], _CachedCatalog] = {}


def _load_price_books(
    session: Session, unit: Unit
) -> tuple[dict[str, list[Contract]], dict[str, list[ResellerPriceBook]]]:
    """Every contract version (highest first) and reseller book (oldest first) of a currency."""
    specs = contract_specs(
        session,
        list(
            session.scalars(
                select(ContractRow)
                .where(ContractRow.currency == unit.code)
                .order_by(ContractRow.account_id, ContractRow.version.desc())
            )
        ),
    )
    locked_ids = sorted({s.rate_card_id for s in specs if s.rate_card_id})
    locked = {
        c.id: c
        for c in cards_of(
            session,
            list(session.scalars(select(RateCardRow).where(RateCardRow.id.in_(locked_ids)))),
        )
    }
    contracts: dict[str, list[Contract]] = {}
    for spec in specs:
        card = locked[spec.rate_card_id] if spec.rate_card_id else None
        contracts.setdefault(spec.account_id, []).append(pure_contract(spec, card))
    books: dict[str, list[ResellerPriceBook]] = {}
    rows = session.scalars(
        select(ResellerPriceBookRow)
        .where(ResellerPriceBookRow.currency == unit.code)
        .order_by(ResellerPriceBookRow.effective_from)
    )
    for book in books_of(session, list(rows)):
        books.setdefault(book.reseller_account_id, []).append(book)
    return contracts, books


@dataclass
class PriceContext:
    """The catalog a batch of usage needs, loaded in a few statements; resolution is then pure.

    Holds every list card of one currency, every contract version of the given accounts (with
    their locked cards) and the reseller price books of the given accounts, at any instant:
    resolution picks the versions in force. :meth:`resolve` gives exactly what
    :func:`resolve_account_price` gives, memoized per (model, account, versions in force).
    """

    currency: Unit
    cards: list[RateCard]
    contracts: dict[str, list[Contract]]
    books: dict[str, list[ResellerPriceBook]]
    _memo: dict[tuple[object, ...], ResolvedPrice] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        session: Session,
        currency: Unit | str,
        *,
        account_ids: Iterable[str],
        version: int | None = None,
    ) -> PriceContext:
        """What pricing ``account_ids`` (and sub-accounts' resellers among them) needs.

        At any instant: every version of every card, contract and book is kept; resolution
        picks the one in force.

        Rate cards, contracts and price books are never edited, and every change that can
        alter a price bumps the currency's :func:`catalog_version` in its own transaction, so
        what was loaded for a version is kept by the process and reused until the version
        moves: a batch then costs no query here once warm.

        Args:
            session: the caller's session (read only).
            currency: the currency priced.
            account_ids: the accounts priced and the resellers of the sub-accounts among them.
            version: the catalog version the caller read under the currency's catalog lock
                (read here when omitted).
        """
        unit = money_unit(currency)
        if version is None:
            version = catalog_version(session, unit)
        key = (database_key(session), unit.code)
        cached = _CACHE.get(key)
        if cached is None or cached.version != version:
            contracts, books = _load_price_books(session, unit)
            cached = _CachedCatalog(version, load_rate_cards(session, unit), contracts, books)
            _CACHE[key] = cached
        ids = sorted(set(account_ids))
        return cls(
            unit,
            cached.cards,
            {i: cached.contracts.get(i, []) for i in ids},
            {i: cached.books.get(i, []) for i in ids},
        )

    def contract_at(self, account_id: str, at: datetime) -> Contract | None:
        """The account's contract in force at ``at``: the highest version containing it."""
        return next((c for c in self.contracts.get(account_id, ()) if c.in_force(at)), None)

    def book_at(self, reseller_account_id: str, at: datetime) -> ResellerPriceBook | None:
        """The reseller's retail book in force at ``at``."""
        return _latest_before(
            self.books.get(reseller_account_id, []), at, lambda b: b.effective_from
        )

    def resolve(
        self,
        *,
        model: str,
        at: datetime,
        account_id: str,
        reseller_account_id: str | None = None,
        standing: Contract | None = None,
    ) -> ResolvedPrice:
        """Resolve like :func:`resolve_account_price`.

        ``standing`` (the account's standing discounts, see :func:`standing_contract`) acts as
        its contract when no contract of the account is in force at ``at``.

        Raises:
            NoRateInForce, UnknownModel, InvalidPrice: as :func:`resolve_account_price`.
        """
        card = _latest_before(self.cards, at, lambda c: c.effective_from)
        contract = self.contract_at(account_id, at) or standing
        book = wholesale_contract = None
        if reseller_account_id is not None:
            book = self.book_at(reseller_account_id, at)
            wholesale_contract = self.contract_at(reseller_account_id, at)
        key = (
            model,
            card.id if card else None,
            contract,
            reseller_account_id is not None,
            book.id if book else None,
            wholesale_contract,
            None if contract is None else contract.in_force(at),
            None if wholesale_contract is None else wholesale_contract.in_force(at),
        )
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        cards = [card] if card is not None else []
        if reseller_account_id is None:
            resolved = resolve_price(model, at, list_cards=cards, contract=contract)
        elif book is not None:
            resolved = resolve_price(
                model,
                at,
                list_cards=cards,
                contract=contract,
                reseller_retail=book.to_retail(wholesale_contract),
            )
        else:
            wholesale = resolve_price(model, at, list_cards=cards, contract=wholesale_contract)
            resolved = replace(
                resolve_price(model, at, list_cards=cards, contract=contract),
                wholesale=wholesale,
            )
        self._memo[key] = resolved
        return resolved
