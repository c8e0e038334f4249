"""Contract discounts, standing discounts and reseller markups as values (pure).

The services in :mod:`plans.contracts`, :mod:`plans.reseller_books` and
:mod:`plans.price_context` parse and check these before anything is stored or priced; nothing
here touches the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from plans.errors import InvalidCatalog, InvalidPrice
from plans.price_fields import parse_pct
from plans.pricebook import Contract
from plans.prices import ModelPrice


@dataclass(frozen=True, slots=True)
class ContractDiscount:
    """A contract discount: ``pct`` off ``model`` (``None``: every model without its own)."""

    model: str | None
    pct: Decimal


def parse_discounts(items: Iterable[Mapping[str, object]]) -> list[ContractDiscount]:
    """A contract's ``{"model"?: id, "pct": "12.5"}`` discount items, parsed.

    Each model (or the all-models discount, without ``model``) may be given once.

    Raises:
        InvalidCatalog: unknown fields, a model that is not a string, a model twice.
        InvalidPrice: a bad percentage.
    """
    parsed: list[ContractDiscount] = []
    for i, item in enumerate(items):
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
    return parsed


def all_models_pct(discounts: Iterable[ContractDiscount]) -> Decimal | None:
    """The all-models discount among ``discounts``, or ``None``."""
    return next((d.pct for d in discounts if d.model is None), None)


def standing_contract(
    account_id: str, discounts: Iterable[Mapping[str, object]]
) -> Contract | None:
    """An account's standing discounts as a contract without a locked card.

    Its id is ``account:<id>``; it prices like a contract whenever the account has no
    contract in force.

    Returns:
        The contract, or ``None`` when the account has no discount.
    """
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


def check_markups(prices: Iterable[ModelPrice], markups: Iterable[tuple[str, Decimal]]) -> None:
    """Refuse, at creation, a markup over a wholesale price that would not rate exactly.

    Args:
        prices: the wholesale prices the markups can apply to.
        markups: ``(price book id, markup percent)`` pairs.

    Raises:
        InvalidPrice: a marked-up price would be finer than one atom per token (naming the
            book).
    """
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
