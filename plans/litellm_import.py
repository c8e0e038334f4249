"""Importing LiteLLM's price map as a rate card (the service).

The conversion is :mod:`plans.litellm_map`.

A dry run (the default) creates nothing and says what the card would do; ``apply`` creates the
missing models and one new effective-dated card that changes the imported models and inherits
every other model of the card in force (:func:`plans.rate_card_versions.create_rate_card`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.units import Unit
from plans._db import check_aware, money_unit
from plans.card_diff import ModelChange, RateCardPlan
from plans.errors import InvalidCatalog
from plans.litellm_map import ROUNDING_RULE, Conversion, Converted, Refusal, convert
from plans.models import CatalogModel
from plans.price_fields import parse_pct
from plans.prices import ModelPrice, price_from_item
from plans.rate_card_versions import UsageOfModels, create_rate_card, plan_rate_card

#: LiteLLM's prices are US dollars.
LITELLM_CURRENCY = "USD"


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did (or, as a dry run, would do)."""

    applied: bool
    card_id: str | None
    replaces: str | None
    effective_from: datetime
    markup_pct: Decimal | None
    new_models: tuple[str, ...]
    changes: tuple[ModelChange, ...]
    imported: tuple[Converted, ...]
    refused: tuple[Refusal, ...]
    skipped: int
    rounding_rule: str = ROUNDING_RULE

    def counts(self) -> dict[str, int]:
        """How many models each kind of change, refusal and flag touches."""
        out: dict[str, int] = {}
        for c in self.changes:
            out[c.change] = out.get(c.change, 0) + 1
        out["refused"] = len(self.refused)
        out["flagged"] = sum(1 for m in self.imported if m.flags)
        out["new_models"] = len(self.new_models)
        return out


def import_litellm(
    session: Session,
    data: Mapping[str, Any],
    *,
    effective_from: datetime,
    currency: Unit | str = LITELLM_CURRENCY,
    markup_pct: object = None,
    providers: Iterable[str] | None = None,
    strict: bool = False,
    apply: bool = False,
    usage_of_models: UsageOfModels | None = None,
    usage_since: datetime | None = None,
) -> ImportReport:
    """Import a LiteLLM price map: a dry run, or (``apply``) new models and a new card.

    Args:
        session: the caller's session (flushed, not committed).
        data: the parsed ``model_prices_and_context_window.json``.
        effective_from: when the new card takes effect (after the usage already priced).
        currency: must be USD (LiteLLM's prices are dollars; there is no FX here).
        markup_pct: percent added to every imported price (<= 2 decimals).
        providers: only these ``litellm_provider`` values.
        strict: refuse models whose prices needed rounding.
        apply: create the models and the card (else only report).
        usage_of_models: counts recent usage of removed models (``plan_rate_card``).
        usage_since: from when usage counts.

    Raises:
        InvalidCatalog: another currency, nothing importable.
        InvalidPrice: a bad markup (the errors of ``create_rate_card`` pass through).
    """
    unit = _usd(currency)
    start = check_aware(effective_from, what="effective_from")
    markup = None if markup_pct is None else parse_pct(markup_pct, what="markup_pct", maximum=None)
    conv: Conversion = convert(data, providers=providers, strict=strict, markup_pct=markup)
    if not conv.models:
        raise InvalidCatalog("nothing in the map can be imported; see the refusals")
    resolved = {m.model: _priced(m.item, markup) for m in conv.models}
    new = _not_in_catalog(session, conv.models)
    card: dict[str, Any] = {
        "currency": unit,
        "effective_from": start,
        "prices": (),
        "resolved_prices": resolved,  # inherits (the default): the card changes what it imports
        "usage_of_models": usage_of_models,
        "usage_since": usage_since,
    }
    plan, card_id = _plan_or_create(session, new, card, apply=apply)
    return ImportReport(
        applied=apply,
        card_id=card_id,
        replaces=plan.predecessor_id,
        effective_from=start,
        markup_pct=markup,
        new_models=tuple(m.model for m in new),
        changes=plan.changes,
        imported=conv.models,
        refused=conv.refused,
        skipped=conv.skipped,
    )


def _not_in_catalog(session: Session, models: Iterable[Converted]) -> list[Converted]:
    listed = list(models)
    ids = [m.model for m in listed]
    existing = set(session.scalars(select(CatalogModel.id).where(CatalogModel.id.in_(ids))))
    return [m for m in listed if m.model not in existing]


def _usd(currency: Unit | str) -> Unit:
    unit = money_unit(currency)
    if unit.code != LITELLM_CURRENCY:
        raise InvalidCatalog(
            f"LiteLLM's prices are in {LITELLM_CURRENCY}; import them into a"
            f" {LITELLM_CURRENCY} card, not {unit.code}",
            field="currency",
        )
    return unit


def _plan_or_create(
    session: Session, new: list[Converted], card: dict[str, Any], *, apply: bool
) -> tuple[RateCardPlan, str | None]:
    """Create the ``new`` models and plan the card; with ``apply`` create the card too.

    Without ``apply`` the models are undone (a dry run creates them only to plan).

    Returns:
        The plan and the new card's id (``None`` for a dry run).
    """
    # a savepoint, not the caller's transaction: released when applied, rolled back for a dry
    # run or an error; the caller commits
    with session.begin_nested() as savepoint:
        session.add_all(
            CatalogModel(id=m.model, provider=m.provider[:100], display_name=m.model) for m in new
        )
        session.flush()
        plan = plan_rate_card(session, **card)
        card_id = create_rate_card(session, **card).id if apply else None
        if not apply:
            savepoint.rollback()
    return plan, card_id


def _priced(item: dict[str, Any], markup: Decimal | None) -> ModelPrice:
    """The item's price, raised by ``markup`` percent exactly.

    Every price is raised (tiers, context tiers, fees); the conversion checked that it rates
    exactly.
    """
    price = price_from_item(item, str(item["model"]))
    return price if markup is None else price.with_markup(markup)
