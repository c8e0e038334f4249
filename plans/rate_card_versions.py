"""Creating a list rate card version, and its dry run (:func:`plan_rate_card`).

A new card changes only what it lists: the other models of the card in force at its
``effective_from`` keep their prices (it inherits them) unless it removes them
(:mod:`plans.card_diff`). It is refused when it would take effect at or before the usage
already priced (:mod:`plans.watermark`), when a card of its currency already takes effect at
that instant, or when a reseller markup over it would not rate exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Required, TypedDict, Unpack

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased

from ledger.base import utcnow
from ledger.errors import DomainError
from ledger.units import Unit
from plans._db import (
    check_aware,
    check_models,
    insert_version,
    money_unit,
    new_id,
    refuse_taken,
)
from plans.card_diff import (
    ModelChange,
    RateCardPlan,
    check_removals,
    check_request,
    diff_card,
    merge_prices,
)
from plans.contracts import open_contracts, pure_contract
from plans.discounts import check_markups
from plans.errors import InvalidCatalog
from plans.markups import markups_from
from plans.models import (
    ContractDiscountRow,
    ContractRow,
    RateCardPriceRow,
    RateCardRow,
    ResellerPriceBookRow,
    ResellerPriceRow,
)
from plans.price_rows import price_columns
from plans.prices import ModelPrice, RateCard
from plans.rate_cards import card_row_at, cards_of
from plans.watermark import refuse_backdated


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
    """What :func:`create_rate_card` would create, model by model (a dry run).

    Nothing is written.

    Args:
        session: the caller's session (read only).
        currency: ISO 4217 code or currency unit.
        effective_from: aware instant from which the card would be in force (inclusive).
        prices: ``{"model", "input_per_mtok", "output_per_mtok", ...optional}`` items,
            decimal strings (defaults: :meth:`~plans.prices.ModelPrice.from_spec`).
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
    check_request(
        listed=bool(listed), resolved=bool(resolved_prices), inherit=inherit, remove=remove
    )
    given_prices: dict[str, ModelPrice] = {}
    if listed:
        given = RateCard.from_spec(id="rc_plan", currency=unit, effective_from=start, prices=listed)
        given_prices = dict(given.prices)
    given_prices = merge_prices(given_prices, resolved_prices or {})
    check_models(session, given_prices, what="prices")
    before_row = card_row_at(session, unit, start)
    before = cards_of(session, [before_row])[0] if before_row is not None else None
    old = dict(before.prices) if before is not None else {}
    check_removals(given_prices, old, remove, currency=unit, at=start)
    final, changes, removed = diff_card(given_prices, old, inherit=inherit, remove=remove)
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
    """Why removing each model is risky.

    Recent usage, open contracts that discount it, reseller price books in force or later that
    price it.
    """
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
    # each reseller's own book in force at ``start`` (or ``start`` itself when it has none)
    earlier = aliased(ResellerPriceBookRow)
    floor = func.coalesce(
        select(func.max(earlier.effective_from))
        .where(
            earlier.reseller_account_id == ResellerPriceBookRow.reseller_account_id,
            earlier.currency == unit.code,
            earlier.effective_from <= start,
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


class RateCardRequest(TypedDict, total=False):
    """A new list rate card as asked for: the arguments of :func:`plan_rate_card`."""

    currency: Required[Unit | str]
    effective_from: Required[datetime]
    prices: Required[Iterable[Mapping[str, object]]]
    inherit: bool
    remove_models: Iterable[str]
    usage_of_models: UsageOfModels | None
    usage_since: datetime | None
    resolved_prices: Mapping[str, ModelPrice] | None


def create_rate_card(
    session: Session, *, confirm_removals: bool = False, **request: Unpack[RateCardRequest]
) -> RateCard:
    """Create a list rate card version; the stored prices are the resolved ones.

    By default the card changes only what it lists (``inherit``); a removal with blockers
    (recent usage, an open contract discount, a reseller book price) is refused unless
    ``confirm_removals``. :func:`plan_rate_card` is the dry run.

    Args:
        session: the caller's session (flushed, not committed).
        confirm_removals: go ahead with removals that have blockers.
        **request: the card, as :func:`plan_rate_card` takes it.

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
    plan = plan_rate_card(session, **request)
    _refuse_unconfirmed(plan, confirm_removals)
    _store(session, plan.card)
    return plan.card


def _refuse_unconfirmed(plan: RateCardPlan, confirmed: bool) -> None:
    """Refuse a card with removals that have blockers, unless they are ``confirmed``."""
    if plan.blocked and not confirmed:
        detail = "; ".join(f"{c.model}: {', '.join(c.blockers)}" for c in plan.blocked)
        raise UnconfirmedRemoval(
            f"the new card would stop pricing models still in use ({detail}); send"
            " confirm_removals: true to go ahead, or keep them on the card",
            models=[c.model for c in plan.blocked],
        )


def _store(session: Session, card: RateCard) -> None:
    """Insert a new card version, or refuse it.

    Refused when its instant is taken or already priced, or when a reseller markup over it
    would not rate exactly.
    """
    unit, start = card.currency, card.effective_from

    def conflict(taken: str | None) -> str:
        card_named = f"rate card {taken}" if taken else "a rate card created at the same moment"
        return (
            f"{card_named} already takes effect for {unit.code} at {start.isoformat()}; "
            "a card is never edited: choose another effective_from for the new version"
        )

    refuse_taken(
        session,
        select(RateCardRow.id).where(
            RateCardRow.currency == unit.code, RateCardRow.effective_from == start
        ),
        conflict,
        key="rate_card_id",
    )
    _check_card_under_markups(session, card, utcnow())
    refuse_backdated(session, unit, start, f"rate card for {unit.code}")
    insert_version(
        session,
        RateCardRow(id=card.id, currency=unit.code, effective_from=start, created_at=utcnow()),
        [
            RateCardPriceRow(card_id=card.id, model=model, **price_columns(price))
            for model, price in card.prices.items()
        ],
        conflict(None),  # the race: another request took the instant meanwhile
    )


def _check_card_under_markups(session: Session, card: RateCard, now: datetime) -> None:
    """Refuse a card over which a reseller markup would not rate exactly.

    The markups in force now or later are checked on the card's prices and on a reseller's
    contract discount of them.
    """
    resellers = session.scalars(
        select(ResellerPriceBookRow.reseller_account_id)
        .where(
            ResellerPriceBookRow.currency == card.currency.code,
            ResellerPriceBookRow.markup_pct.is_not(None),
        )
        .distinct()
    ).all()
    for reseller in resellers:
        markups = markups_from(session, reseller, card.currency, now)
        if not markups:
            continue
        wholesale = list(card.prices.values())
        for spec in open_contracts(session, reseller, card.currency, now):
            if spec.rate_card_id is None:
                contract = pure_contract(spec, None)
                wholesale += [contract.price_on(card, model) for model in card.prices]
        check_markups(wholesale, markups)
