"""What a new rate card changes, model by model (pure).

A new card lists some prices; the others come from the card in force at its
``effective_from`` (it *inherits* them) unless it removes them. :func:`diff_card` compares the
two and says, per model, whether the new card adds, changes, keeps, inherits or removes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ledger.units import Unit
from plans.errors import InvalidCatalog
from plans.prices import ModelPrice, RateCard


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
    """A rate card as it would be created, with its changes.

    See :func:`plans.rate_card_versions.plan_rate_card`.
    """

    card: RateCard
    predecessor_id: str | None
    changes: tuple[ModelChange, ...]

    @property
    def blocked(self) -> tuple[ModelChange, ...]:
        """Removals that need confirming."""
        return tuple(c for c in self.changes if c.change == "removed" and c.blockers)


def check_request(*, listed: bool, resolved: bool, inherit: bool, remove: Sequence[str]) -> None:
    """Refuse a card request that cannot make a card.

    Args:
        listed: prices are given.
        resolved: prices already built are given.
        inherit: the card inherits the models it does not list.
        remove: the models it removes.

    Raises:
        InvalidCatalog: removals on a card that does not inherit, or nothing to do.
    """
    if remove and not inherit:
        raise InvalidCatalog(
            "remove_models is for a card that inherits; a card that does not inherit removes"
            " every model it does not list",
            field="remove_models",
        )
    if not listed and not resolved and not (inherit and remove):
        raise InvalidCatalog("a rate card needs prices (or, inheriting, models to remove)")


def merge_prices(
    given: Mapping[str, ModelPrice], resolved: Mapping[str, ModelPrice]
) -> dict[str, ModelPrice]:
    """The given prices and the prices already built, each model once.

    Raises:
        InvalidCatalog: a model in both.
    """
    out = dict(given)
    for model, price in resolved.items():
        if model in out:
            raise InvalidCatalog(f"model {model} is priced twice", field="prices")
        out[model] = price
    return out


def check_removals(
    given: Mapping[str, ModelPrice],
    old: Mapping[str, ModelPrice],
    remove: Sequence[str],
    *,
    currency: Unit,
    at: datetime,
) -> None:
    """Refuse removals that cannot be.

    A removed model must not be priced by the new card too, and must be priced by the card in
    force (``old``, of ``currency`` at ``at``).

    Raises:
        InvalidCatalog: the first such model.
    """
    for model in remove:
        if model in given:
            raise InvalidCatalog(
                f"model {model} is both priced and removed; do one or the other",
                field="remove_models",
            )
        if model not in old:
            raise InvalidCatalog(
                f"model {model} is not priced by the {currency.code} card in force at"
                f" {at.isoformat()}; there is nothing to remove",
                field="remove_models",
            )


def diff_card(
    given: Mapping[str, ModelPrice],
    old: Mapping[str, ModelPrice],
    *,
    inherit: bool,
    remove: Sequence[str],
) -> tuple[dict[str, ModelPrice], list[ModelChange], list[str]]:
    """The new card's prices and its changes against the card in force.

    Args:
        given: the prices the new card lists.
        old: the prices of the card in force at its ``effective_from`` (empty: none).
        inherit: keep the models of ``old`` that ``given`` does not list.
        remove: models of ``old`` not to keep (with ``inherit``).

    Returns:
        The new card's prices; the changes of the listed models (by model) then of the
        inherited ones (by model); the removed models (by model), whose changes the caller
        adds with their blockers.
    """
    final = dict(given)
    changes: list[ModelChange] = []
    for model, price in sorted(given.items()):
        prev = old.get(model)
        kind = "added" if prev is None else ("unchanged" if prev == price else "changed")
        changes.append(ModelChange(model, kind, prev, price))
    removed: list[str] = []
    for model, price in sorted(old.items()):
        if model in given:
            continue
        if inherit and model not in remove:
            final[model] = price
            changes.append(ModelChange(model, "inherited", price, price))
        else:
            removed.append(model)
    return final, changes, removed
