"""Rate cards, the rating watermark, contracts and reseller price books in the database.

Services take a :class:`~sqlalchemy.orm.Session` and never commit; they return the pure values
of :mod:`plans.prices` and :mod:`plans.pricebook` (or frozen dataclasses), never ORM rows.

Versioning, in one place:

* **Rate cards** are never edited. The card in force for a currency at ``at`` is the one with
  the greatest ``effective_from <= at``; two cards of one currency never share an
  ``effective_from``.
* **Contracts** are versioned by creation per (account, currency): the contract in force at
  ``at`` is the highest version whose term ``[starts_at, ends_at)`` contains ``at``
  (``starts_at`` defaults to the creation instant), so a new contract supersedes the older
  ones from its ``starts_at`` on and an older one applies again after a newer one's
  ``ends_at``.
* **Reseller price books** are versioned by ``effective_from`` per (reseller, currency),
  like rate cards.
* **The watermark** (``rating_watermarks``): the usage path records the latest instant it has
  priced per currency (:func:`advance_priced_through`). A rate card, contract or reseller price
  book must take effect strictly *after* it, so a catalog change never reprices usage that was
  already priced; corrections to history are credit notes, not new prices.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import TypeVar

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from ledger.base import database_key, utcnow
from ledger.errors import DomainError, NotFound
from ledger.units import Unit
from plans._db import (
    Page,
    check_aware,
    check_models,
    clean_decimal,
    conflict_as,
    money_unit,
    new_id,
    page_limit,
)
from plans.catalog_errors import BackdatedPriceChange, CatalogConflict
from plans.errors import InvalidCatalog, InvalidPrice, NoRateInForce
from plans.models import (
    ContractDiscountRow,
    ContractRow,
    CostPriceRow,
    RateCardPriceRow,
    RateCardRow,
    RatingWatermark,
    ResellerPriceBookRow,
    ResellerPriceRow,
)
from plans.pricebook import Contract, ResellerRetail, ResolvedPrice, resolve_price
from plans.prices import (
    MAX_MARKUP_PCT,
    PRICE_FIELDS,
    ModelPrice,
    RateCard,
    parse_pct,
    price_for,
)

# -- price rows ---------------------------------------------------------------------------


def _price_columns(price: ModelPrice) -> dict[str, object]:
    values: dict[str, object] = {name: getattr(price, name) for name in PRICE_FIELDS}
    values["batch_discount_pct"] = price.batch_discount_pct
    spec = price.to_spec()
    values["request_fees"] = spec.get("request_fees", {})
    values["service_tiers"] = spec.get("service_tiers", {})
    values["context_tiers"] = spec.get("context_tiers", [])
    return values


def _price_of(row: RateCardPriceRow | ResellerPriceRow | CostPriceRow) -> ModelPrice:
    spec: dict[str, object] = {name: clean_decimal(getattr(row, name)) for name in PRICE_FIELDS}
    spec["batch_discount_pct"] = clean_decimal(row.batch_discount_pct)
    spec["request_fees"] = row.request_fees or {}
    spec["service_tiers"] = row.service_tiers or {}
    spec["context_tiers"] = row.context_tiers or []
    return ModelPrice.from_stored(spec)


def _parse_prices(
    currency: Unit, items: Iterable[Mapping[str, object]], *, owner: str
) -> dict[str, ModelPrice]:
    """Price items in the ``POST /v1/rate-cards`` shape, defaults applied (may be empty)."""
    listed = [dict(item) for item in items]
    if not listed:
        return {}
    # RateCard.from_spec validates keys, duplicates and every price; the id is a placeholder.
    card = RateCard.from_spec(id=owner, currency=currency, effective_from=utcnow(), prices=listed)
    return dict(card.prices)


# -- the watermark ------------------------------------------------------------------------


def priced_through(session: Session, currency: Unit | str) -> datetime | None:
    """The latest usage instant already priced in ``currency`` (``None``: nothing yet)."""
    unit = money_unit(currency)
    return session.scalar(
        select(RatingWatermark.priced_through_at).where(RatingWatermark.currency == unit.code)
    )


#: The catalog lock of a currency: pricing batches take it shared for their whole
#: transaction, catalog changes exclusively (``tw_lock_key`` is defined by migration 0009).
_CATALOG_SHARED = text("SELECT pg_advisory_xact_lock_shared(tw_lock_key('catalog', :c))")
_CATALOG_EXCLUSIVE = text("SELECT pg_advisory_xact_lock(tw_lock_key('catalog', :c))")


def advance_priced_through(session: Session, currency: Unit | str, at: datetime) -> datetime:
    """Record that usage in ``currency`` up to ``at`` is being priced (monotonic).

    A pricing batch takes the currency's catalog lock *shared* (until its transaction ends),
    then moves the mark when it prices later usage than it shows. A catalog change takes the
    same lock *exclusively* before it reads the mark (:func:`_lock_watermark`), so it either
    commits before the batch (and the batch sees it) or waits for the batch and is then refused
    if it would take effect at or before the mark. Batches never block each other; only the one
    that moves the mark writes its row. The gateway path does the same in its own statements
    (``wallet/snapshot.py``, ``wallet/writeback.py``).

    Args:
        session: the caller's session (not committed here).
        currency: the currency priced.
        at: aware instant; the mark never goes backwards.

    Returns:
        The watermark after the call (``max(previous, at)``).
    """
    unit = money_unit(currency)
    at = check_aware(at, what="priced_through_at")
    session.execute(_CATALOG_SHARED, {"c": unit.code})
    current = session.scalar(
        select(RatingWatermark.priced_through_at).where(RatingWatermark.currency == unit.code)
    )
    if current is not None and current >= at:
        return current
    now = utcnow()
    insert = pg_insert(RatingWatermark).values(
        currency=unit.code, priced_through_at=at, updated_at=now
    )
    upsert = insert.on_conflict_do_update(
        index_elements=[RatingWatermark.currency],
        set_={
            "priced_through_at": func.greatest(
                RatingWatermark.priced_through_at, insert.excluded.priced_through_at
            ),
            "updated_at": insert.excluded.updated_at,
        },
    ).returning(RatingWatermark.priced_through_at)
    mark: datetime | None = session.execute(upsert).scalar_one()
    assert mark is not None
    return mark


def _lock_watermark(session: Session, unit: Unit) -> datetime | None:
    """Wait for the pricing batches in flight, keep new ones out until this transaction ends
    (the catalog lock, exclusively), bump the currency's catalog version (a price is about to
    change) and return the mark."""
    session.execute(_CATALOG_EXCLUSIVE, {"c": unit.code})
    session.execute(
        pg_insert(RatingWatermark)
        .values(currency=unit.code, priced_through_at=None, updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=[RatingWatermark.currency])
    )
    mark = session.scalar(
        select(RatingWatermark.priced_through_at)
        .where(RatingWatermark.currency == unit.code)
        .with_for_update()
    )
    # a sequence, not +1: a version number used by a transaction that rolls back is never
    # reused, so a process that cached what that transaction saw can never mistake it for
    # another transaction's catalog
    session.execute(
        update(RatingWatermark)
        .where(RatingWatermark.currency == unit.code)
        .values(catalog_version=func.nextval("catalog_versions"))
    )
    return mark


def catalog_version(session: Session, currency: Unit | str) -> int:
    """The currency's catalog version: it changes with every rate card, contract or reseller
    price book, in that change's transaction (0 before the first)."""
    unit = money_unit(currency)
    version = session.scalar(
        select(RatingWatermark.catalog_version).where(RatingWatermark.currency == unit.code)
    )
    return int(version or 0)


def _refuse_backdated(session: Session, unit: Unit, start: datetime, what: str) -> None:
    mark = _lock_watermark(session, unit)
    if mark is not None and start <= mark:
        raise BackdatedPriceChange(
            f"{what} would take effect at {start.isoformat()}, but {unit.code} usage is "
            f"already priced through {mark.isoformat()}; choose a time after "
            f"{mark.isoformat()} (history is corrected with credit notes, not new prices)",
            priced_through_at=mark.isoformat(),
        )


# -- rate cards ---------------------------------------------------------------------------


def _cards(session: Session, rows: list[RateCardRow]) -> list[RateCard]:
    if not rows:
        return []
    prices: dict[str, dict[str, ModelPrice]] = {row.id: {} for row in rows}
    for price_row in session.scalars(
        select(RateCardPriceRow)
        .where(RateCardPriceRow.card_id.in_(prices))
        .order_by(RateCardPriceRow.card_id, RateCardPriceRow.model)
    ):
        prices[price_row.card_id][price_row.model] = _price_of(price_row)
    return [
        RateCard(
            id=row.id,
            currency=money_unit(row.currency),
            effective_from=row.effective_from,
            prices=prices[row.id],
        )
        for row in rows
    ]


@dataclass(frozen=True, slots=True)
class ModelChange:
    """What a new rate card does to one model, compared with the card it follows.

    Attributes:
        change: ``added`` (not priced before), ``changed``, ``unchanged`` (listed with the
            same price), ``inherited`` (not listed, carried from the card in force) or
            ``removed`` (no longer priced).
        blockers: for a removal, why it is risky (recent usage, contracts, reseller books);
            a card with blocked removals is refused unless they are confirmed.
    """

    model: str
    change: str
    before: ModelPrice | None
    after: ModelPrice | None
    blockers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RateCardPlan:
    """A rate card as it would be created (:func:`plan_rate_card`), with its changes."""

    card: RateCard
    predecessor_id: str | None
    changes: tuple[ModelChange, ...]

    @property
    def blocked(self) -> tuple[ModelChange, ...]:
        """Removals that need confirming."""
        return tuple(c for c in self.changes if c.change == "removed" and c.blockers)


class UnconfirmedRemoval(DomainError):
    """A new rate card would stop pricing models still in use; confirm to go ahead."""

    code = "model_removal_unconfirmed"
    status = 409


#: ``(models, since) -> {model: records}``: usage of the models since an instant (the wallet
#: answers it; the catalog does not read usage tables itself)
UsageOfModels = Callable[[Sequence[str], datetime], Mapping[str, int]]


def plan_rate_card(
    session: Session,
    *,
    currency: Unit | str,
    effective_from: datetime,
    prices: Iterable[Mapping[str, object]],
    inherit: bool = True,
    remove_models: Iterable[str] = (),
    usage_of_models: UsageOfModels | None = None,
    usage_since: datetime | None = None,
    resolved_prices: Mapping[str, ModelPrice] | None = None,
) -> RateCardPlan:
    """What :func:`create_rate_card` would create, model by model, without writing anything
    (a dry run).

    Args:
        inherit: models of the card in force at ``effective_from`` that ``prices`` does not
            list keep their price (``False``: the new card prices only what it lists).
        remove_models: models to stop pricing (with ``inherit``).
        usage_of_models: how to count recent usage of removed models (blocks a removal).
        usage_since: from when usage counts (the usage retention window).
        resolved_prices: prices already built (e.g. with a markup, so finer than a given
            price may be), besides ``prices``.

    Raises:
        InvalidCatalog: a removed model that the card in force does not price, or that the
            new card also prices; the errors of :func:`create_rate_card`'s validation.
    """
    unit = money_unit(currency)
    start = check_aware(effective_from, what="effective_from")
    listed = [dict(p) for p in prices]
    remove = list(dict.fromkeys(remove_models))
    if remove and not inherit:
        raise InvalidCatalog(
            "remove_models is for a card that inherits; a card that does not inherit removes"
            " every model it does not list",
            field="remove_models",
        )
    if not listed and not resolved_prices and not (inherit and remove):
        raise InvalidCatalog("a rate card needs prices (or, inheriting, models to remove)")
    given_prices: dict[str, ModelPrice] = {}
    if listed:
        given = RateCard.from_spec(id="rc_plan", currency=unit, effective_from=start, prices=listed)
        given_prices = dict(given.prices)
    for model, price in (resolved_prices or {}).items():
        if model in given_prices:
            raise InvalidCatalog(f"model {model} is priced twice", field="prices")
        given_prices[model] = price
    check_models(session, given_prices, what="prices")
    before_row = session.scalars(
        select(RateCardRow)
        .where(RateCardRow.currency == unit.code, RateCardRow.effective_from <= start)
        .order_by(RateCardRow.effective_from.desc())
        .limit(1)
    ).first()
    before = _cards(session, [before_row])[0] if before_row is not None else None
    old = dict(before.prices) if before is not None else {}
    for model in remove:
        if model in given_prices:
            raise InvalidCatalog(
                f"model {model} is both priced and removed; do one or the other",
                field="remove_models",
            )
        if model not in old:
            raise InvalidCatalog(
                f"model {model} is not priced by the {unit.code} card in force at"
                f" {start.isoformat()}; there is nothing to remove",
                field="remove_models",
            )
    final = dict(given_prices)
    changes: list[ModelChange] = []
    for model, price in sorted(given_prices.items()):
        prev = old.get(model)
        kind = "added" if prev is None else ("unchanged" if prev == price else "changed")
        changes.append(ModelChange(model, kind, prev, price))
    removed: list[str] = []
    for model, price in sorted(old.items()):
        if model in given_prices:
            continue
        if inherit and model not in remove:
            final[model] = price
            changes.append(ModelChange(model, "inherited", price, price))
        else:
            removed.append(model)
    blockers = _removal_blockers(session, unit, start, removed, usage_of_models, usage_since)
    changes += [
        ModelChange(m, "removed", old[m], None, tuple(blockers.get(m, ()))) for m in removed
    ]
    if not final:
        raise InvalidCatalog("the new card would price no model", field="prices")
    card = RateCard(id=new_id("rc"), currency=unit, effective_from=start, prices=final)
    return RateCardPlan(card, before.id if before else None, tuple(changes))


def _removal_blockers(
    session: Session,
    unit: Unit,
    start: datetime,
    models: Sequence[str],
    usage_of_models: UsageOfModels | None,
    usage_since: datetime | None,
) -> dict[str, list[str]]:
    """Why removing each model is risky: recent usage, open contracts that discount it,
    reseller price books in force or later that price it."""
    out: dict[str, list[str]] = {m: [] for m in models}
    if not models:
        return out
    if usage_of_models is not None and usage_since is not None:
        for model, n in usage_of_models(models, usage_since).items():
            if n:
                out[model].append(f"{n} usage records since {usage_since.isoformat()}")
    contracts = session.execute(
        select(ContractDiscountRow.model, ContractRow.id, ContractRow.account_id)
        .join(ContractRow, ContractRow.id == ContractDiscountRow.contract_id)
        .where(
            ContractRow.currency == unit.code,
            ContractRow.rate_card_id.is_(None),
            ContractDiscountRow.model.in_(models),
            or_(ContractRow.ends_at.is_(None), ContractRow.ends_at > start),
        )
        .order_by(ContractRow.id)
    )
    for model, contract_id, account_id in contracts:
        out[model].append(f"contract {contract_id} of account {account_id} discounts it")
    floor = func.coalesce(
        select(func.max(ResellerPriceBookRow.effective_from))
        .where(
            ResellerPriceBookRow.currency == unit.code,
            ResellerPriceBookRow.effective_from <= start,
        )
        .scalar_subquery(),
        start,
    )
    books = session.execute(
        select(ResellerPriceRow.model, ResellerPriceBookRow.id)
        .join(ResellerPriceBookRow, ResellerPriceBookRow.id == ResellerPriceRow.book_id)
        .where(
            ResellerPriceBookRow.currency == unit.code,
            ResellerPriceRow.model.in_(models),
            ResellerPriceBookRow.effective_from >= floor,
        )
        .order_by(ResellerPriceBookRow.id)
    )
    for model, book_id in books:
        out[model].append(f"reseller price book {book_id} prices it (it needs a wholesale price)")
    return out


def create_rate_card(
    session: Session,
    *,
    currency: Unit | str,
    effective_from: datetime,
    prices: Iterable[Mapping[str, object]],
    inherit: bool = True,
    remove_models: Iterable[str] = (),
    confirm_removals: bool = False,
    usage_of_models: UsageOfModels | None = None,
    usage_since: datetime | None = None,
    resolved_prices: Mapping[str, ModelPrice] | None = None,
) -> RateCard:
    """Create a list rate card version; the stored prices are the resolved ones.

    By default the card changes only what it lists: the other models of the card in force at
    ``effective_from`` keep their prices (``inherit``); ``remove_models`` stops pricing some.
    A card that would stop pricing a model with recent usage, discounted by an open contract
    or priced by a reseller book is refused unless ``confirm_removals``.
    :func:`plan_rate_card` shows what a card would change.

    Args:
        session: the caller's session (flushed, not committed).
        currency: ISO 4217 code or currency unit.
        effective_from: aware instant from which the card is in force (inclusive).
        prices: ``{"model", "input_per_mtok", "output_per_mtok", ...optional}`` items,
            decimal strings; omitted prices take the defaults of
            :meth:`~plans.prices.ModelPrice.from_spec`.
        inherit, remove_models, usage_of_models, usage_since: see :func:`plan_rate_card`.
        confirm_removals: go ahead with removals that have blockers.

    Returns:
        The new card.

    Raises:
        UnknownUnit: an unknown currency.
        InvalidCatalog: no prices, a model priced twice, unknown fields, a naive instant.
        InvalidPrice: a malformed, negative or too precise price or percentage.
        UnknownModel: a model that is not in the catalog.
        UnconfirmedRemoval: removals with blockers, not confirmed.
        CatalogConflict: a card of this currency already takes effect at that instant.
        BackdatedPriceChange: ``effective_from`` is not after the usage already priced.
    """
    unit = money_unit(currency)
    start = check_aware(effective_from, what="effective_from")
    plan = plan_rate_card(
        session,
        currency=unit,
        effective_from=start,
        prices=prices,
        inherit=inherit,
        remove_models=remove_models,
        usage_of_models=usage_of_models,
        usage_since=usage_since,
        resolved_prices=resolved_prices,
    )
    if plan.blocked and not confirm_removals:
        detail = "; ".join(f"{c.model}: {', '.join(c.blockers)}" for c in plan.blocked)
        raise UnconfirmedRemoval(
            f"the new card would stop pricing models still in use ({detail}); send"
            " confirm_removals: true to go ahead, or keep them on the card",
            models=[c.model for c in plan.blocked],
        )
    card = plan.card
    card_id = card.id
    taken = session.scalar(
        select(RateCardRow.id).where(
            RateCardRow.currency == unit.code, RateCardRow.effective_from == start
        )
    )
    message = (
        f"rate card {taken} already takes effect for {unit.code} at {start.isoformat()}; "
        "a card is never edited: choose another effective_from for the new version"
    )
    if taken is not None:
        raise CatalogConflict(message, rate_card_id=taken)
    _check_card_under_markups(session, card, utcnow())
    _refuse_backdated(session, unit, start, f"rate card for {unit.code}")
    with conflict_as(session, message):
        session.add(
            RateCardRow(id=card_id, currency=unit.code, effective_from=start, created_at=utcnow())
        )
        session.flush()
        session.add_all(
            RateCardPriceRow(card_id=card_id, model=model, **_price_columns(price))
            for model, price in card.prices.items()
        )
    return card


def _check_card_under_markups(session: Session, card: RateCard, now: datetime) -> None:
    """Refuse a card whose prices (or a reseller's contract discount on them) would make a
    reseller markup in force now or later rate inexactly."""
    resellers = session.scalars(
        select(ResellerPriceBookRow.reseller_account_id)
        .where(
            ResellerPriceBookRow.currency == card.currency.code,
            ResellerPriceBookRow.markup_pct.is_not(None),
        )
        .distinct()
    ).all()
    for reseller in resellers:
        markups = _markups_from(session, reseller, card.currency, now)
        if not markups:
            continue
        wholesale = list(card.prices.values())
        for spec in _open_contracts(session, reseller, card.currency, now):
            if spec.rate_card_id is None:
                contract = _pure_contract(spec, None)
                wholesale += [contract.price_on(card, model) for model in card.prices]
        _check_markups(wholesale, markups)


def get_rate_card(session: Session, card_id: str) -> RateCard:
    """A rate card by id.

    Raises:
        NotFound: no such card.
    """
    row = session.get(RateCardRow, card_id)
    if row is None:
        raise NotFound(f"rate card {card_id} does not exist", rate_card_id=card_id)
    return _cards(session, [row])[0]


def list_rate_cards(
    session: Session,
    *,
    currency: Unit | str | None = None,
    limit: int = 20,
    starting_after: str | None = None,
) -> Page[RateCard]:
    """Rate cards in creation order, optionally of one currency."""
    limit = page_limit(limit)
    stmt = select(RateCardRow).order_by(RateCardRow.id).limit(limit + 1)
    if currency is not None:
        stmt = stmt.where(RateCardRow.currency == money_unit(currency).code)
    if starting_after:
        stmt = stmt.where(RateCardRow.id > starting_after)
    rows = list(session.scalars(stmt))
    return Page(tuple(_cards(session, rows[:limit])), len(rows) > limit)


def load_rate_cards(session: Session, currency: Unit | str) -> list[RateCard]:
    """Every rate card version of ``currency``, oldest ``effective_from`` first."""
    unit = money_unit(currency)
    rows = list(
        session.scalars(
            select(RateCardRow)
            .where(RateCardRow.currency == unit.code)
            .order_by(RateCardRow.effective_from)
        )
    )
    return _cards(session, rows)


def card_in_force_at(session: Session, currency: Unit | str, at: datetime) -> RateCard:
    """The list card of ``currency`` in force at ``at`` (greatest ``effective_from <= at``).

    Raises:
        NoRateInForce: no card has taken effect by ``at``.
    """
    unit = money_unit(currency)
    at = check_aware(at, what="at")
    row = session.scalars(
        select(RateCardRow)
        .where(RateCardRow.currency == unit.code, RateCardRow.effective_from <= at)
        .order_by(RateCardRow.effective_from.desc())
        .limit(1)
    ).first()
    if row is None:
        raise NoRateInForce(
            f"no {unit.code} rate card is in force at {at.isoformat()}",
            currency=unit.code,
            at=at.isoformat(),
        )
    return _cards(session, [row])[0]


def price_in_force(
    session: Session, currency: Unit | str, model: str, at: datetime
) -> tuple[RateCard, ModelPrice]:
    """The list card in force at ``at`` and its price for ``model``.

    Raises:
        NoRateInForce: no card has taken effect by ``at``.
        UnknownModel: the card in force does not price ``model``.
    """
    card = card_in_force_at(session, currency, at)
    return card, price_for(card, model)


def _future_cards(session: Session, unit: Unit, now: datetime) -> list[RateCard]:
    """The card in force now (if any) and every later one."""
    floor = session.scalar(
        select(func.max(RateCardRow.effective_from)).where(
            RateCardRow.currency == unit.code, RateCardRow.effective_from <= now
        )
    )
    stmt = select(RateCardRow).where(RateCardRow.currency == unit.code)
    if floor is not None:
        stmt = stmt.where(RateCardRow.effective_from >= floor)
    return _cards(session, list(session.scalars(stmt.order_by(RateCardRow.effective_from))))


# -- contracts ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContractDiscount:
    """A contract discount: ``pct`` off ``model`` (``None``: every model without its own)."""

    model: str | None
    pct: Decimal


@dataclass(frozen=True, slots=True)
class ContractSpec:
    """A stored contract version (see :class:`plans.pricebook.Contract` for the semantics)."""

    id: str
    account_id: str
    currency: Unit
    version: int
    rate_card_id: str | None
    starts_at: datetime | None
    ends_at: datetime | None
    discounts: tuple[ContractDiscount, ...]
    created_at: datetime


def _contract_spec(row: ContractRow, discounts: list[ContractDiscountRow]) -> ContractSpec:
    items: list[ContractDiscount] = []
    if row.all_models_discount_pct is not None:
        items.append(ContractDiscount(None, clean_decimal(row.all_models_discount_pct)))
    items += [ContractDiscount(d.model, clean_decimal(d.pct)) for d in discounts]
    return ContractSpec(
        id=row.id,
        account_id=row.account_id,
        currency=money_unit(row.currency),
        version=row.version,
        rate_card_id=row.rate_card_id,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        discounts=tuple(items),
        created_at=row.created_at,
    )


def _contract_specs(session: Session, rows: list[ContractRow]) -> list[ContractSpec]:
    by_contract: dict[str, list[ContractDiscountRow]] = {row.id: [] for row in rows}
    if rows:
        for d in session.scalars(
            select(ContractDiscountRow)
            .where(ContractDiscountRow.contract_id.in_(by_contract))
            .order_by(ContractDiscountRow.contract_id, ContractDiscountRow.model)
        ):
            by_contract[d.contract_id].append(d)
    return [_contract_spec(row, by_contract[row.id]) for row in rows]


def _pure_contract(spec: ContractSpec, card: RateCard | None) -> Contract:
    return Contract(
        id=spec.id,
        card=card,
        starts_at=spec.starts_at,
        ends_at=spec.ends_at,
        discounts_pct={d.model: d.pct for d in spec.discounts if d.model is not None},
        all_models_discount_pct=next((d.pct for d in spec.discounts if d.model is None), None),
    )


def _check_account_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise InvalidCatalog(f"{what} must be a non-empty id of at most 64 characters")
    return value


def create_contract(
    session: Session,
    *,
    account_id: str,
    currency: Unit | str,
    rate_card_id: str | None = None,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    discounts: Iterable[Mapping[str, object]] = (),
) -> ContractSpec:
    """Create the next contract version of an account in a currency.

    Args:
        session: the caller's session (flushed, not committed).
        account_id: the account (opaque here; the wallet owns accounts).
        currency: the account's currency.
        rate_card_id: a card version to lock, or ``None`` to discount the list card in force.
        starts_at: first instant in force (inclusive); defaults to now.
        ends_at: end of the term (exclusive), or ``None`` for open-ended.
        discounts: ``{"model"?: id, "pct": "12.5"}`` items; without ``model`` the discount
            applies to every model that has none of its own.

    Raises:
        InvalidCatalog: a malformed id, naive or unordered term, two all-model discounts, a
            model discounted twice, a locked card in another currency, or a contract that
            neither locks a card nor discounts anything.
        InvalidPrice: a bad percentage, or discounted prices that would not rate exactly.
        UnknownModel: a discounted model that is not in the catalog.
        NotFound: the locked rate card does not exist.
        BackdatedPriceChange: ``starts_at`` is not after the usage already priced.
    """
    account_id = _check_account_id(account_id, "account_id")
    unit = money_unit(currency)
    now = utcnow()
    start = now if starts_at is None else check_aware(starts_at, what="starts_at")
    end = None if ends_at is None else check_aware(ends_at, what="ends_at")
    if end is not None and end <= start:
        raise InvalidCatalog(
            f"ends_at ({end.isoformat()}) must be after starts_at ({start.isoformat()})",
            field="ends_at",
        )
    parsed: list[ContractDiscount] = []
    for i, item in enumerate(discounts):
        unknown = sorted(set(item) - {"model", "pct"})
        if unknown:
            raise InvalidCatalog(f"discounts[{i}]: unknown fields {unknown}; allowed: model, pct")
        model = item.get("model")
        if model is not None and not isinstance(model, str):
            raise InvalidCatalog(f"discounts[{i}].model must be a model id")
        pct = parse_pct(item.get("pct"), what=f"discounts[{i}].pct")
        if any(d.model == model for d in parsed):
            which = "the all-models discount" if model is None else f"model {model!r}"
            raise InvalidCatalog(f"discounts list {which} twice; give each once")
        parsed.append(ContractDiscount(model, pct))
    check_models(session, [d.model for d in parsed if d.model is not None], what="discounts")
    card: RateCard | None = None
    if rate_card_id is not None:
        card = get_rate_card(session, rate_card_id)
        if card.currency != unit:
            raise InvalidCatalog(
                f"rate card {rate_card_id} is in {card.currency.code}, the contract in {unit.code}",
                field="rate_card_id",
            )
    version = (
        session.scalar(
            select(func.max(ContractRow.version)).where(
                ContractRow.account_id == account_id, ContractRow.currency == unit.code
            )
        )
        or 0
    ) + 1
    spec = ContractSpec(
        id=new_id("ct"),
        account_id=account_id,
        currency=unit,
        version=version,
        rate_card_id=rate_card_id,
        starts_at=start,
        ends_at=end,
        discounts=tuple(parsed),
        created_at=now,
    )
    contract = _pure_contract(spec, card)  # validates, incl. exactness on a locked card
    _check_markups(
        _contract_prices(session, contract, unit, now),
        _markups_from(session, account_id, unit, now),
    )
    _refuse_backdated(session, unit, start, f"contract for account {account_id}")
    with conflict_as(
        session,
        f"another contract version for account {account_id} was created at the same time; retry",
    ):
        session.add(
            ContractRow(
                id=spec.id,
                account_id=account_id,
                currency=unit.code,
                version=version,
                rate_card_id=rate_card_id,
                starts_at=start,
                ends_at=end,
                all_models_discount_pct=next((d.pct for d in parsed if d.model is None), None),
                created_at=now,
            )
        )
        session.flush()
        session.add_all(
            ContractDiscountRow(contract_id=spec.id, model=d.model, pct=d.pct)
            for d in parsed
            if d.model is not None
        )
    return spec


def _contract_prices(
    session: Session, contract: Contract, unit: Unit, now: datetime
) -> list[ModelPrice]:
    """Every price ``contract`` can produce from ``now`` on: its locked card's, or its
    discount on the list card in force now and on every later one."""
    cards = [contract.card] if contract.card is not None else _future_cards(session, unit, now)
    return [contract.price_on(card, model) for card in cards for model in card.prices]


def _markups_from(
    session: Session, reseller_account_id: str, unit: Unit, now: datetime
) -> list[tuple[str, Decimal]]:
    """(book id, markup) of the reseller's books in force now or later that have a markup."""
    floor = session.scalar(
        select(func.max(ResellerPriceBookRow.effective_from)).where(
            ResellerPriceBookRow.reseller_account_id == reseller_account_id,
            ResellerPriceBookRow.currency == unit.code,
            ResellerPriceBookRow.effective_from <= now,
        )
    )
    stmt = select(ResellerPriceBookRow.id, ResellerPriceBookRow.markup_pct).where(
        ResellerPriceBookRow.reseller_account_id == reseller_account_id,
        ResellerPriceBookRow.currency == unit.code,
        ResellerPriceBookRow.markup_pct.is_not(None),
    )
    if floor is not None:
        stmt = stmt.where(ResellerPriceBookRow.effective_from >= floor)
    return [
        (book_id, clean_decimal(pct)) for book_id, pct in session.execute(stmt) if pct is not None
    ]


def _check_markups(prices: Iterable[ModelPrice], markups: Iterable[tuple[str, Decimal]]) -> None:
    """Refuse, at creation, a markup over a wholesale price that would not rate exactly."""
    distinct = set(prices)
    for book_id, markup in markups:
        for price in distinct:
            try:
                price.with_markup(markup)
            except InvalidPrice as exc:
                raise InvalidPrice(
                    f"reseller price book {book_id}: a {markup}% markup over a wholesale price "
                    f"would not rate exactly ({exc.detail})",
                    **exc.extra,
                ) from None


def get_contract(session: Session, contract_id: str) -> ContractSpec:
    """A contract version by id.

    Raises:
        NotFound: no such contract.
    """
    row = session.get(ContractRow, contract_id)
    if row is None:
        raise NotFound(f"contract {contract_id} does not exist", contract_id=contract_id)
    return _contract_specs(session, [row])[0]


def list_contracts(
    session: Session,
    *,
    account_id: str | None = None,
    limit: int = 20,
    starting_after: str | None = None,
) -> Page[ContractSpec]:
    """Contract versions in creation order, optionally of one account."""
    limit = page_limit(limit)
    stmt = select(ContractRow).order_by(ContractRow.id).limit(limit + 1)
    if account_id is not None:
        stmt = stmt.where(ContractRow.account_id == account_id)
    if starting_after:
        stmt = stmt.where(ContractRow.id > starting_after)
    rows = list(session.scalars(stmt))
    return Page(tuple(_contract_specs(session, rows[:limit])), len(rows) > limit)


def contract_in_force(
    session: Session, account_id: str, currency: Unit | str, at: datetime
) -> Contract | None:
    """The account's contract in force at ``at``: the highest version whose term contains it."""
    unit = money_unit(currency)
    row = session.scalars(
        select(ContractRow)
        .where(
            ContractRow.account_id == account_id,
            ContractRow.currency == unit.code,
            or_(ContractRow.starts_at.is_(None), ContractRow.starts_at <= at),
            or_(ContractRow.ends_at.is_(None), ContractRow.ends_at > at),
        )
        .order_by(ContractRow.version.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    spec = _contract_specs(session, [row])[0]
    card = get_rate_card(session, spec.rate_card_id) if spec.rate_card_id else None
    return _pure_contract(spec, card)


# -- reseller retail price books ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResellerPriceBook:
    """A stored reseller retail price book version.

    Attributes:
        id: the book's id (``source_id`` of usage it prices).
        reseller_account_id: the reseller whose sub-accounts it prices.
        currency: the currency of its prices.
        markup_pct: percent over the reseller's wholesale price, or ``None``.
        prices: model -> explicit retail price (defaults applied), read-only.
        effective_from: first instant in force (inclusive).
        created_at: when it was created.
    """

    id: str
    reseller_account_id: str
    currency: Unit
    markup_pct: Decimal | None
    prices: Mapping[str, ModelPrice]
    effective_from: datetime
    created_at: datetime

    def __hash__(self) -> int:
        return hash(("reseller_price_book", self.id))

    def to_retail(self, wholesale_contract: Contract | None = None) -> ResellerRetail:
        """The pure price book for :func:`plans.pricebook.resolve_price`."""
        return ResellerRetail(
            id=self.id,
            currency=self.currency,
            markup_pct=self.markup_pct,
            overrides=self.prices,
            wholesale_contract=wholesale_contract,
        )


def _books(session: Session, rows: list[ResellerPriceBookRow]) -> list[ResellerPriceBook]:
    prices: dict[str, dict[str, ModelPrice]] = {row.id: {} for row in rows}
    if rows:
        for p in session.scalars(
            select(ResellerPriceRow)
            .where(ResellerPriceRow.book_id.in_(prices))
            .order_by(ResellerPriceRow.book_id, ResellerPriceRow.model)
        ):
            prices[p.book_id][p.model] = _price_of(p)
    return [
        ResellerPriceBook(
            id=row.id,
            reseller_account_id=row.reseller_account_id,
            currency=money_unit(row.currency),
            markup_pct=None if row.markup_pct is None else clean_decimal(row.markup_pct),
            prices=MappingProxyType(prices[row.id]),
            effective_from=row.effective_from,
            created_at=row.created_at,
        )
        for row in rows
    ]


def create_reseller_price_book(
    session: Session,
    *,
    reseller_account_id: str,
    currency: Unit | str,
    markup_pct: object = None,
    prices: Iterable[Mapping[str, object]] = (),
    effective_from: datetime | None = None,
) -> ResellerPriceBook:
    """Create a reseller's retail price book version for its sub-accounts.

    For a model, an explicit price wins; otherwise ``markup_pct`` is added to the reseller's
    wholesale price (its own contract, else list); with neither, the sub-account pays list.

    Args:
        session: the caller's session (flushed, not committed).
        reseller_account_id: the reseller (opaque here; the wallet owns accounts).
        currency: the currency of the book (the reseller's).
        markup_pct: percent over wholesale (>= 0, <= 2 decimals), or ``None``.
        prices: explicit retail prices, same shape as rate-card prices.
        effective_from: first instant in force; defaults to now.

    Raises:
        InvalidCatalog: neither a markup nor any price, a model priced twice, bad fields.
        InvalidPrice: a bad price or markup, or a markup over a wholesale price known now
            (current and future list cards, the reseller's contracts) that would not rate
            exactly.
        UnknownModel: a priced model that is not in the catalog.
        CatalogConflict: a book of this reseller and currency already starts at that instant.
        BackdatedPriceChange: ``effective_from`` is not after the usage already priced.
    """
    reseller_account_id = _check_account_id(reseller_account_id, "reseller_account_id")
    unit = money_unit(currency)
    now = utcnow()
    start = now if effective_from is None else check_aware(effective_from, what="effective_from")
    book_id = new_id("rb")
    markup = (
        None
        if markup_pct is None
        else parse_pct(markup_pct, what="markup_pct", maximum=MAX_MARKUP_PCT)
    )
    overrides = _parse_prices(unit, prices, owner=book_id)
    # validates "neither markup nor override" and the markup itself
    ResellerRetail(id=book_id, currency=unit, markup_pct=markup, overrides=overrides)
    check_models(session, overrides, what="prices")
    if markup is not None:
        wholesale = [
            price for card in _future_cards(session, unit, now) for price in card.prices.values()
        ]
        for spec in _open_contracts(session, reseller_account_id, unit, now):
            card = get_rate_card(session, spec.rate_card_id) if spec.rate_card_id else None
            wholesale += _contract_prices(session, _pure_contract(spec, card), unit, now)
        _check_markups(wholesale, [(book_id, markup)])
    message = (
        f"reseller {reseller_account_id} already has a {unit.code} price book taking effect "
        f"at {start.isoformat()}; choose another effective_from for the new version"
    )
    taken = session.scalar(
        select(ResellerPriceBookRow.id).where(
            ResellerPriceBookRow.reseller_account_id == reseller_account_id,
            ResellerPriceBookRow.currency == unit.code,
            ResellerPriceBookRow.effective_from == start,
        )
    )
    if taken is not None:
        raise CatalogConflict(message, reseller_price_book_id=taken)
    _refuse_backdated(session, unit, start, f"price book of reseller {reseller_account_id}")
    with conflict_as(session, message):
        session.add(
            ResellerPriceBookRow(
                id=book_id,
                reseller_account_id=reseller_account_id,
                currency=unit.code,
                markup_pct=markup,
                effective_from=start,
                created_at=now,
            )
        )
        session.flush()
        session.add_all(
            ResellerPriceRow(book_id=book_id, model=model, **_price_columns(price))
            for model, price in overrides.items()
        )
    return ResellerPriceBook(
        id=book_id,
        reseller_account_id=reseller_account_id,
        currency=unit,
        markup_pct=markup,
        prices=MappingProxyType(overrides),
        effective_from=start,
        created_at=now,
    )


def _open_contracts(
    session: Session, account_id: str, unit: Unit, now: datetime
) -> list[ContractSpec]:
    rows = list(
        session.scalars(
            select(ContractRow)
            .where(
                ContractRow.account_id == account_id,
                ContractRow.currency == unit.code,
                or_(ContractRow.ends_at.is_(None), ContractRow.ends_at > now),
            )
            .order_by(ContractRow.version)
        )
    )
    return _contract_specs(session, rows)


def get_reseller_price_book(session: Session, book_id: str) -> ResellerPriceBook:
    """A reseller price book by id.

    Raises:
        NotFound: no such book.
    """
    row = session.get(ResellerPriceBookRow, book_id)
    if row is None:
        raise NotFound(f"reseller price book {book_id} does not exist", book_id=book_id)
    return _books(session, [row])[0]


def list_reseller_price_books(
    session: Session,
    *,
    reseller_account_id: str | None = None,
    limit: int = 20,
    starting_after: str | None = None,
) -> Page[ResellerPriceBook]:
    """Reseller price books in creation order, optionally of one reseller."""
    limit = page_limit(limit)
    stmt = select(ResellerPriceBookRow).order_by(ResellerPriceBookRow.id).limit(limit + 1)
    if reseller_account_id is not None:
        stmt = stmt.where(ResellerPriceBookRow.reseller_account_id == reseller_account_id)
    if starting_after:
        stmt = stmt.where(ResellerPriceBookRow.id > starting_after)
    rows = list(session.scalars(stmt))
    return Page(tuple(_books(session, rows[:limit])), len(rows) > limit)


def reseller_book_in_force(
    session: Session, reseller_account_id: str, currency: Unit | str, at: datetime
) -> ResellerPriceBook | None:
    """The reseller's price book in force at ``at`` (greatest ``effective_from <= at``)."""
    unit = money_unit(currency)
    row = session.scalars(
        select(ResellerPriceBookRow)
        .where(
            ResellerPriceBookRow.reseller_account_id == reseller_account_id,
            ResellerPriceBookRow.currency == unit.code,
            ResellerPriceBookRow.effective_from <= at,
        )
        .order_by(ResellerPriceBookRow.effective_from.desc())
        .limit(1)
    ).first()
    return None if row is None else _books(session, [row])[0]


# -- resolution ---------------------------------------------------------------------------


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


def standing_contract(
    account_id: str, discounts: Iterable[Mapping[str, object]]
) -> Contract | None:
    """An account's standing discounts as a contract without a locked card (id
    ``account:<id>``), or ``None`` when it has none. It prices like a contract whenever the
    account has no contract in force."""
    per_model: dict[str, Decimal] = {}
    every: Decimal | None = None
    for item in discounts:
        pct = parse_pct(item.get("pct"), what="discount pct")
        model = item.get("model")
        if model is None:
            every = pct
        else:
            per_model[str(model)] = pct
    if not per_model and every is None:
        return None
    return Contract(
        id=f"account:{account_id}", discounts_pct=per_model, all_models_discount_pct=every
    )


def check_standing_discounts(
    session: Session,
    currency: Unit | str,
    account_id: str,
    discounts: Iterable[Mapping[str, object]],
) -> None:
    """Refuse standing discounts that would not rate exactly on the list cards in force now or
    later (like a contract without a locked card is checked when created).

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
    _contract_prices(session, contract, unit, utcnow())


def _latest_before(versions: list[_V], at: datetime, key: Callable[[_V], datetime]) -> _V | None:
    """The version with the greatest ``key <= at`` from a list sorted by ``key``."""
    i = bisect_right([key(v) for v in versions], at)
    return versions[i - 1] if i else None


_V = TypeVar("_V")


@dataclass
class _CachedCatalog:
    """One process's copy of a currency's catalog at one version: every list card, every
    contract version and every reseller price book (contracts and books are few next to
    accounts, and any of them changing moves the version)."""

    version: int
    cards: list[RateCard]
    contracts: dict[str, list[Contract]] = field(default_factory=dict)
    books: dict[str, list[ResellerPriceBook]] = field(default_factory=dict)


_CACHE: dict[tuple[str, str], _CachedCatalog] = {}


def _load_cards(session: Session, unit: Unit) -> list[RateCard]:
    """Every list card of ``unit``, oldest ``effective_from`` first."""
    rows = session.scalars(
        select(RateCardRow)
        .where(RateCardRow.currency == unit.code)
        .order_by(RateCardRow.effective_from)
    )
    return _cards(session, list(rows))


def _load_price_books(
    session: Session, unit: Unit
) -> tuple[dict[str, list[Contract]], dict[str, list[ResellerPriceBook]]]:
    """Every contract version (highest first) and reseller book (oldest first) of a currency."""
    specs = _contract_specs(
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
        for c in _cards(
            session,
            list(session.scalars(select(RateCardRow).where(RateCardRow.id.in_(locked_ids)))),
        )
    }
    contracts: dict[str, list[Contract]] = {}
    for spec in specs:
        card = locked[spec.rate_card_id] if spec.rate_card_id else None
        contracts.setdefault(spec.account_id, []).append(_pure_contract(spec, card))
    books: dict[str, list[ResellerPriceBook]] = {}
    rows = session.scalars(
        select(ResellerPriceBookRow)
        .where(ResellerPriceBookRow.currency == unit.code)
        .order_by(ResellerPriceBookRow.effective_from)
    )
    for book in _books(session, list(rows)):
        books.setdefault(book.reseller_account_id, []).append(book)
    return contracts, books


@dataclass
class PriceContext:
    """The catalog a batch of usage needs, loaded in a few statements; resolution is then pure.

    Holds the list cards of one currency that can be in force in ``[since, until]``, every
    contract version of the given accounts overlapping that span (with their locked cards) and
    the reseller price books of the given accounts. :meth:`resolve` gives exactly what
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
        """What pricing ``account_ids`` (and sub-accounts' resellers among them) needs, at any
        instant (every version of every card, contract and book is kept; resolution picks the
        one in force).

        Rate cards, contracts and price books are never edited, and every change that can
        alter a price bumps the currency's :func:`catalog_version` in its own transaction, so
        what was loaded for a version is kept by the process and reused until the version
        moves: a batch then costs no query here once warm.

        Args:
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
            cached = _CachedCatalog(version, _load_cards(session, unit), contracts, books)
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
        """Resolve like :func:`resolve_account_price`. ``standing`` (the account's standing
        discounts, see :func:`standing_contract`) acts as its contract when no contract of the
        account is in force at ``at``.

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
