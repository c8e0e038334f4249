"""The catalog services: models, token packages, coding plans, top-up bonus rules and
failed-request policies; rate cards, contracts, reseller price books, the watermark and price
resolution (in their own modules) are re-exported here, the API's one import.

Every function takes a :class:`~sqlalchemy.orm.Session` and never commits: the caller (a
request, a job, the CLI) owns the transaction. Results are frozen dataclasses; no ORM object
leaves this module. Bad input raises a :class:`~ledger.errors.DomainError` with a stable code
before anything is written; a missing object raises :class:`~ledger.errors.NotFound`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session

from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.errors import MixedUnits, NotFound
from ledger.units import Unit
from plans._db import (
    Page,
    check_aware,
    check_id,
    check_int,
    check_models,
    check_text,
    clean_decimal,
    conflict_as,
    money_unit,
    new_id,
    page_limit,
    parse_money,
)
from plans.card_diff import ModelChange, RateCardPlan
from plans.catalog_errors import BackdatedPriceChange, CatalogConflict
from plans.contracts import (
    ContractSpec,
    contract_in_force,
    create_contract,
    get_contract,
    list_contracts,
)
from plans.discounts import ContractDiscount
from plans.errors import InvalidCatalog
from plans.failures import FAILURE_KINDS
from plans.models import (
    BonusRuleRow,
    BonusTierRow,
    CatalogModel,
    FailedRequestPolicyRow,
    PackageRow,
    PlanRow,
    PlanWindowRow,
)
from plans.price_context import resolve_account_price
from plans.prices import parse_pct
from plans.rate_card_versions import UnconfirmedRemoval, create_rate_card, plan_rate_card
from plans.rate_cards import (
    card_in_force_at,
    get_rate_card,
    list_rate_cards,
    load_rate_cards,
    price_in_force,
)
from plans.reseller_books import (
    ResellerPriceBook,
    create_reseller_price_book,
    get_reseller_price_book,
    list_reseller_price_books,
)
from plans.watermark import advance_priced_through, priced_through

__all__ = [
    "DEFAULT_FAILED_REQUEST_POLICY",
    "FAILURE_KINDS",
    "TREATMENTS",
    "BackdatedPriceChange",
    "BonusGrant",
    "BonusRule",
    "BonusTier",
    "CatalogConflict",
    "ContractDiscount",
    "ContractSpec",
    "FailedRequestPolicy",
    "ModelChange",
    "ModelInfo",
    "PackageSpec",
    "Page",
    "PlanSpec",
    "RateCardPlan",
    "ResellerPriceBook",
    "UnconfirmedRemoval",
    "WindowSpec",
    "advance_priced_through",
    "bonus_for_topup",
    "bonus_rule_in_force",
    "card_in_force_at",
    "contract_in_force",
    "create_contract",
    "create_failed_request_policy",
    "create_model",
    "create_package",
    "create_plan",
    "create_rate_card",
    "create_reseller_price_book",
    "create_topup_bonus_rule",
    "get_contract",
    "get_failed_request_policy",
    "get_model",
    "get_package",
    "get_plan",
    "get_rate_card",
    "get_reseller_price_book",
    "get_topup_bonus_rule",
    "list_contracts",
    "list_failed_request_policies",
    "list_failed_request_policy_versions",
    "list_models",
    "list_packages",
    "list_plans",
    "list_rate_cards",
    "list_reseller_price_books",
    "list_topup_bonus_rules",
    "load_rate_cards",
    "plan_rate_card",
    "price_in_force",
    "priced_through",
    "resolve_account_price",
]


# -- models -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model that rate cards can price."""

    id: str
    provider: str
    display_name: str
    created_at: datetime


def _model_info(row: CatalogModel) -> ModelInfo:
    return ModelInfo(row.id, row.provider, row.display_name, row.created_at)


def create_model(session: Session, *, id: str, provider: str, display_name: str) -> ModelInfo:
    """Add a model to the catalog (prices come with rate cards).

    Raises:
        InvalidCatalog: a malformed id, provider or display name.
        CatalogConflict: the id exists.
    """
    model_id = check_id(id, what="id")
    provider = check_text(provider, what="provider", max_length=100)
    display_name = check_text(display_name, what="display_name")
    message = f"model {model_id} already exists; models are never edited"
    if session.get(CatalogModel, model_id) is not None:
        raise CatalogConflict(message, model=model_id)
    row = CatalogModel(
        id=model_id, provider=provider, display_name=display_name, created_at=utcnow()
    )
    with conflict_as(session, message, model=model_id):
        session.add(row)
    return _model_info(row)


def get_model(session: Session, model_id: str) -> ModelInfo:
    """A model by id.

    Raises:
        NotFound: no such model.
    """
    row = session.get(CatalogModel, model_id)
    if row is None:
        raise NotFound(f"model {model_id} does not exist", model=model_id)
    return _model_info(row)


def list_models(
    session: Session, *, limit: int = 20, starting_after: str | None = None
) -> Page[ModelInfo]:
    """Models by id."""
    limit = page_limit(limit)
    stmt = select(CatalogModel).order_by(CatalogModel.id).limit(limit + 1)
    if starting_after:
        stmt = stmt.where(CatalogModel.id > starting_after)
    rows = list(session.scalars(stmt))
    return Page(tuple(_model_info(r) for r in rows[:limit]), len(rows) > limit)


# -- token packages -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PackageSpec:
    """A token package: ``tokens`` for ``price``, on ``models`` (empty: every model), usable
    for ``valid_days`` after purchase."""

    id: str
    name: str
    currency: Unit
    price: Amount
    tokens: int
    models: tuple[str, ...]
    valid_days: int


def _package_spec(row: PackageRow) -> PackageSpec:
    unit = money_unit(row.currency)
    return PackageSpec(
        id=row.id,
        name=row.name,
        currency=unit,
        price=Amount(row.price, unit),
        tokens=row.tokens,
        models=tuple(row.models),
        valid_days=row.valid_days,
    )


def create_package(
    session: Session,
    *,
    id: str,
    name: str,
    currency: Unit | str,
    price: object,
    tokens: int,
    valid_days: int,
    models: Iterable[str] = (),
) -> PackageSpec:
    """Add a token package.

    Args:
        session: the caller's session (flushed, not committed).
        id: the package id chosen by the operator.
        name: display name.
        currency: ISO 4217 code.
        price: decimal string, >= 0, whole minor units.
        tokens: tokens granted, > 0.
        valid_days: days the tokens stay usable after purchase, >= 1.
        models: the models the tokens may be spent on (empty: every model).

    Raises:
        InvalidCatalog: a malformed id or name, ``tokens`` < 1, ``valid_days`` < 1, or a
            model listed twice.
        InvalidAmount: a bad price.
        UnknownUnit: an unknown currency.
        UnknownModel: a model that is not in the catalog.
        CatalogConflict: the id exists.
    """
    package_id = check_id(id, what="id")
    name = check_text(name, what="name")
    unit = money_unit(currency)
    amount = parse_money(price, unit, what="price")
    tokens = check_int(
        tokens, what="tokens", minimum=1, hint=": a package must grant at least one token"
    )
    valid_days = check_int(
        valid_days, what="valid_days", minimum=1, hint=" (days the tokens stay usable)"
    )
    scope = check_models(session, models, what="models")
    message = f"package {package_id} already exists; packages are never edited"
    if session.get(PackageRow, package_id) is not None:
        raise CatalogConflict(message, package_id=package_id)
    row = PackageRow(
        id=package_id,
        name=name,
        currency=unit.code,
        price=amount.atoms,
        tokens=tokens,
        models=list(scope),
        valid_days=valid_days,
        created_at=utcnow(),
    )
    with conflict_as(session, message, package_id=package_id):
        session.add(row)
    return _package_spec(row)


def get_package(session: Session, package_id: str) -> PackageSpec:
    """A token package by id.

    Raises:
        NotFound: no such package.
    """
    row = session.get(PackageRow, package_id)
    if row is None:
        raise NotFound(f"package {package_id} does not exist", package_id=package_id)
    return _package_spec(row)


def list_packages(
    session: Session, *, limit: int = 20, starting_after: str | None = None
) -> Page[PackageSpec]:
    """Token packages by id."""
    limit = page_limit(limit)
    stmt = select(PackageRow).order_by(PackageRow.id).limit(limit + 1)
    if starting_after:
        stmt = stmt.where(PackageRow.id > starting_after)
    rows = list(session.scalars(stmt))
    return Page(tuple(_package_spec(r) for r in rows[:limit]), len(rows) > limit)


# -- coding plans -------------------------------------------------------------------------

WINDOW_KINDS = ("rolling_5h", "weekly", "monthly")
WINDOW_UNITS = ("requests", "tokens")
ON_EXHAUSTED = ("block", "wallet")


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A quota window: at most ``limit`` ``unit`` per ``kind`` window."""

    kind: str
    unit: str
    limit: int


@dataclass(frozen=True, slots=True)
class PlanSpec:
    """A coding plan: a monthly fee, model scope (empty: every model), quota windows, and
    what happens when a window is exhausted (``block`` or fall back to the ``wallet``)."""

    id: str
    name: str
    currency: Unit
    monthly_fee: Amount
    models: tuple[str, ...]
    windows: tuple[WindowSpec, ...]
    on_exhausted: str


def _plan_spec(row: PlanRow, windows: list[PlanWindowRow]) -> PlanSpec:
    unit = money_unit(row.currency)
    return PlanSpec(
        id=row.id,
        name=row.name,
        currency=unit,
        monthly_fee=Amount(row.monthly_fee, unit),
        models=tuple(row.models),
        windows=tuple(
            WindowSpec(w.kind, w.unit, w.quota_limit)
            for w in sorted(windows, key=lambda w: w.position)
        ),
        on_exhausted=row.on_exhausted,
    )


def _plan_specs(session: Session, rows: list[PlanRow]) -> list[PlanSpec]:
    windows: dict[str, list[PlanWindowRow]] = {row.id: [] for row in rows}
    if rows:
        for w in session.scalars(select(PlanWindowRow).where(PlanWindowRow.plan_id.in_(windows))):
            windows[w.plan_id].append(w)
    return [_plan_spec(row, windows[row.id]) for row in rows]


def _parse_windows(items: Iterable[Mapping[str, object]]) -> list[WindowSpec]:
    windows: list[WindowSpec] = []
    for i, item in enumerate(items):
        unknown = sorted(set(item) - {"kind", "unit", "limit"})
        if unknown:
            raise InvalidCatalog(
                f"windows[{i}]: unknown fields {unknown}; allowed: kind, unit, limit"
            )
        kind, unit = item.get("kind"), item.get("unit")
        if kind not in WINDOW_KINDS:
            raise InvalidCatalog(
                f"windows[{i}].kind must be one of {', '.join(WINDOW_KINDS)}, got {kind!r}"
            )
        if unit not in WINDOW_UNITS:
            raise InvalidCatalog(
                f"windows[{i}].unit must be one of {', '.join(WINDOW_UNITS)}, got {unit!r}"
            )
        limit = check_int(item.get("limit"), what=f"windows[{i}].limit", minimum=1)
        assert isinstance(kind, str) and isinstance(unit, str)
        for j, other in enumerate(windows):
            if (other.kind, other.unit) == (kind, unit):
                raise InvalidCatalog(
                    f"windows[{j}] and windows[{i}] are both {kind} windows on {unit}; they "
                    f"would overlap, so give one {kind} {unit} limit",
                    field="windows",
                )
        windows.append(WindowSpec(kind, unit, limit))
    if not windows:
        raise InvalidCatalog("a plan needs at least one quota window", field="windows")
    return windows


def create_plan(
    session: Session,
    *,
    id: str,
    name: str,
    currency: Unit | str,
    monthly_fee: object,
    windows: Iterable[Mapping[str, object]],
    on_exhausted: str,
    models: Iterable[str] = (),
) -> PlanSpec:
    """Add a coding plan.

    Args:
        session: the caller's session (flushed, not committed).
        id: the plan id chosen by the operator.
        name: display name.
        currency: ISO 4217 code.
        monthly_fee: decimal string, >= 0, whole minor units.
        windows: ``{"kind": "rolling_5h"|"weekly"|"monthly", "unit": "requests"|"tokens",
            "limit": int > 0}`` items; at least one, at most one per (kind, unit).
        on_exhausted: ``block`` (refuse) or ``wallet`` (charge the wallet) once a window is full.
        models: the models the plan covers (empty: every model).

    Raises:
        InvalidCatalog: malformed fields, no window, two windows of one kind and unit.
        InvalidAmount: a bad fee.
        UnknownUnit: an unknown currency.
        UnknownModel: a model that is not in the catalog.
        CatalogConflict: the id exists.
    """
    plan_id = check_id(id, what="id")
    name = check_text(name, what="name")
    unit = money_unit(currency)
    fee = parse_money(monthly_fee, unit, what="monthly_fee")
    parsed = _parse_windows(windows)
    if on_exhausted not in ON_EXHAUSTED:
        raise InvalidCatalog(
            f"on_exhausted must be 'block' or 'wallet', got {on_exhausted!r}",
            field="on_exhausted",
        )
    scope = check_models(session, models, what="models")
    message = f"plan {plan_id} already exists; plans are never edited"
    if session.get(PlanRow, plan_id) is not None:
        raise CatalogConflict(message, plan_id=plan_id)
    row = PlanRow(
        id=plan_id,
        name=name,
        currency=unit.code,
        monthly_fee=fee.atoms,
        models=list(scope),
        on_exhausted=on_exhausted,
        created_at=utcnow(),
    )
    window_rows = [
        PlanWindowRow(plan_id=plan_id, kind=w.kind, unit=w.unit, quota_limit=w.limit, position=i)
        for i, w in enumerate(parsed)
    ]
    with conflict_as(session, message, plan_id=plan_id):
        session.add(row)
        session.flush()
        session.add_all(window_rows)
    return _plan_spec(row, window_rows)


def get_plan(session: Session, plan_id: str) -> PlanSpec:
    """A coding plan by id.

    Raises:
        NotFound: no such plan.
    """
    row = session.get(PlanRow, plan_id)
    if row is None:
        raise NotFound(f"plan {plan_id} does not exist", plan_id=plan_id)
    return _plan_specs(session, [row])[0]


def list_plans(
    session: Session, *, limit: int = 20, starting_after: str | None = None
) -> Page[PlanSpec]:
    """Coding plans by id."""
    limit = page_limit(limit)
    stmt = select(PlanRow).order_by(PlanRow.id).limit(limit + 1)
    if starting_after:
        stmt = stmt.where(PlanRow.id > starting_after)
    rows = list(session.scalars(stmt))
    return Page(tuple(_plan_specs(session, rows[:limit])), len(rows) > limit)


# -- top-up bonus rules -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BonusTier:
    """From ``min_amount`` on: ``bonus_pct`` percent of the top-up, or a fixed
    ``bonus_amount`` (exactly one is set); the bonus lot expires after
    ``bonus_expires_days`` (``None``: never)."""

    min_amount: Amount
    bonus_pct: Decimal | None
    bonus_amount: Amount | None
    bonus_expires_days: int | None


@dataclass(frozen=True, slots=True)
class BonusRule:
    """A bonus rule version for (currency, owner); tiers by increasing ``min_amount``.

    ``owner_account_id`` ``None`` is the operator's rule; otherwise a reseller's rule for its
    sub-accounts. An empty ``tiers`` ends bonuses from ``effective_from`` on.
    """

    id: str
    currency: Unit
    owner_account_id: str | None
    effective_from: datetime
    tiers: tuple[BonusTier, ...]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BonusGrant:
    """The bonus a top-up earns: ``amount`` under rule ``rule_id``, expiring after
    ``expires_days`` (``None``: never)."""

    rule_id: str
    amount: Amount
    expires_days: int | None


def _rules(session: Session, rows: list[BonusRuleRow]) -> list[BonusRule]:
    tiers: dict[str, list[BonusTierRow]] = {row.id: [] for row in rows}
    if rows:
        for t in session.scalars(
            select(BonusTierRow)
            .where(BonusTierRow.rule_id.in_(tiers))
            .order_by(BonusTierRow.rule_id, BonusTierRow.min_amount)
        ):
            tiers[t.rule_id].append(t)
    out = []
    for row in rows:
        unit = money_unit(row.currency)
        out.append(
            BonusRule(
                id=row.id,
                currency=unit,
                owner_account_id=row.owner_account_id,
                effective_from=row.effective_from,
                tiers=tuple(
                    BonusTier(
                        min_amount=Amount(t.min_amount, unit),
                        bonus_pct=None if t.bonus_pct is None else clean_decimal(t.bonus_pct),
                        bonus_amount=None
                        if t.bonus_amount is None
                        else Amount(t.bonus_amount, unit),
                        bonus_expires_days=t.bonus_expires_days,
                    )
                    for t in tiers[row.id]
                ),
                created_at=row.created_at,
            )
        )
    return out


def _parse_tiers(unit: Unit, items: Iterable[Mapping[str, object]]) -> list[BonusTier]:
    tiers: list[BonusTier] = []
    allowed = {"min_amount", "bonus_pct", "bonus_amount", "bonus_expires_days"}
    for i, item in enumerate(items):
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise InvalidCatalog(
                f"tiers[{i}]: unknown fields {unknown}; allowed: {sorted(allowed)}"
            )
        minimum = parse_money(item.get("min_amount"), unit, what=f"tiers[{i}].min_amount")
        pct, fixed = item.get("bonus_pct"), item.get("bonus_amount")
        if (pct is None) == (fixed is None):
            raise InvalidCatalog(
                f"tiers[{i}] needs exactly one of bonus_pct (percent of the top-up) or "
                "bonus_amount (a fixed bonus)",
                field=f"tiers[{i}]",
            )
        expires = item.get("bonus_expires_days")
        tier = BonusTier(
            min_amount=minimum,
            bonus_pct=None if pct is None else parse_pct(pct, what=f"tiers[{i}].bonus_pct"),
            bonus_amount=None
            if fixed is None
            else parse_money(fixed, unit, what=f"tiers[{i}].bonus_amount"),
            bonus_expires_days=None
            if expires is None
            else check_int(expires, what=f"tiers[{i}].bonus_expires_days", minimum=1),
        )
        if tiers and tier.min_amount <= tiers[-1].min_amount:
            raise InvalidCatalog(
                f"tiers must be listed by strictly increasing min_amount; tiers[{i}] "
                f"({minimum.format()}) is not above tiers[{i - 1}] "
                f"({tiers[-1].min_amount.format()})",
                field="tiers",
            )
        tiers.append(tier)
    return tiers


def create_topup_bonus_rule(
    session: Session,
    *,
    currency: Unit | str,
    tiers: Iterable[Mapping[str, object]],
    owner_account_id: str | None = None,
    effective_from: datetime | None = None,
) -> BonusRule:
    """Create a top-up bonus rule version; it supersedes the owner's earlier rules from
    ``effective_from`` (default: now) on.

    Args:
        session: the caller's session (flushed, not committed).
        currency: ISO 4217 code; the rule applies to top-ups in this currency.
        tiers: ``{"min_amount", "bonus_pct" | "bonus_amount", "bonus_expires_days"?}`` items
            by strictly increasing ``min_amount``; the highest tier reached applies. Empty:
            no bonus from ``effective_from`` on.
        owner_account_id: a reseller whose sub-accounts the rule is for; ``None``: the
            operator's rule for its direct customers.
        effective_from: first instant in force; defaults to now.

    Raises:
        InvalidCatalog: unknown fields, neither or both bonus kinds, unordered tiers,
            ``bonus_expires_days`` < 1, a naive instant.
        InvalidAmount: an amount that is negative or finer than a minor unit.
        InvalidPrice: a percentage outside 0..100 or with more than 2 decimals.
        UnknownUnit: an unknown currency.
        CatalogConflict: the owner already has a rule of this currency at that instant.
    """
    unit = money_unit(currency)
    if owner_account_id is not None and (
        not isinstance(owner_account_id, str) or not owner_account_id.strip()
    ):
        raise InvalidCatalog("owner_account_id must be a non-empty account id or null")
    now = utcnow()
    start = now if effective_from is None else check_aware(effective_from, what="effective_from")
    parsed = _parse_tiers(unit, tiers)
    owner = "the operator" if owner_account_id is None else f"account {owner_account_id}"
    message = (
        f"{owner} already has a {unit.code} top-up bonus rule taking effect at "
        f"{start.isoformat()}; rules are never edited: choose another effective_from"
    )
    taken = session.scalar(
        select(BonusRuleRow.id).where(
            BonusRuleRow.currency == unit.code,
            BonusRuleRow.owner_account_id.is_not_distinct_from(owner_account_id),
            BonusRuleRow.effective_from == start,
        )
    )
    if taken is not None:
        raise CatalogConflict(message, rule_id=taken)
    rule_id = new_id("br")
    with conflict_as(session, message):
        session.add(
            BonusRuleRow(
                id=rule_id,
                currency=unit.code,
                owner_account_id=owner_account_id,
                effective_from=start,
                created_at=now,
            )
        )
        session.flush()
        session.add_all(
            BonusTierRow(
                rule_id=rule_id,
                min_amount=t.min_amount.atoms,
                bonus_pct=t.bonus_pct,
                bonus_amount=None if t.bonus_amount is None else t.bonus_amount.atoms,
                bonus_expires_days=t.bonus_expires_days,
            )
            for t in parsed
        )
    return BonusRule(rule_id, unit, owner_account_id, start, tuple(parsed), now)


def get_topup_bonus_rule(session: Session, rule_id: str) -> BonusRule:
    """A bonus rule version by id.

    Raises:
        NotFound: no such rule.
    """
    row = session.get(BonusRuleRow, rule_id)
    if row is None:
        raise NotFound(f"top-up bonus rule {rule_id} does not exist", rule_id=rule_id)
    return _rules(session, [row])[0]


def list_topup_bonus_rules(
    session: Session,
    *,
    currency: Unit | str | None = None,
    owner_account_id: str | None = None,
    limit: int = 20,
    starting_after: str | None = None,
) -> Page[BonusRule]:
    """Bonus rule versions in creation order, optionally of one currency and/or owner."""
    limit = page_limit(limit)
    stmt = select(BonusRuleRow).order_by(BonusRuleRow.id).limit(limit + 1)
    if currency is not None:
        stmt = stmt.where(BonusRuleRow.currency == money_unit(currency).code)
    if owner_account_id is not None:
        stmt = stmt.where(BonusRuleRow.owner_account_id == owner_account_id)
    if starting_after:
        stmt = stmt.where(BonusRuleRow.id > starting_after)
    rows = list(session.scalars(stmt))
    return Page(tuple(_rules(session, rows[:limit])), len(rows) > limit)


def bonus_rule_in_force(
    session: Session, *, currency: Unit | str, at: datetime, owner_account_id: str | None = None
) -> BonusRule | None:
    """The owner's rule in force at ``at``: the greatest ``effective_from <= at``.

    A reseller's sub-accounts use only their reseller's rules (the reseller pays for their
    bonus); they never fall back to the operator's.
    """
    unit = money_unit(currency)
    at = check_aware(at, what="at")
    row = session.scalars(
        select(BonusRuleRow)
        .where(
            BonusRuleRow.currency == unit.code,
            BonusRuleRow.owner_account_id.is_not_distinct_from(owner_account_id),
            BonusRuleRow.effective_from <= at,
        )
        .order_by(BonusRuleRow.effective_from.desc())
        .limit(1)
    ).first()
    return None if row is None else _rules(session, [row])[0]


def bonus_for_topup(
    session: Session,
    *,
    currency: Unit,
    amount: Amount,
    at: datetime,
    owner_account_id: str | None = None,
) -> BonusGrant | None:
    """The bonus a top-up of ``amount`` at ``at`` earns.

    The rule in force for (currency, owner) at ``at`` applies, and in it the highest tier
    whose ``min_amount <= amount`` (a top-up of exactly ``min_amount`` reaches the tier). A
    percentage bonus is ``amount * pct / 100`` exactly (floored to the atom only for an
    amount finer than 10**-14 of the unit, which top-ups never are); a fixed bonus is the
    tier's ``bonus_amount``.

    Args:
        session: the caller's session (read only).
        currency: the top-up's currency.
        amount: the top-up amount (in ``currency``).
        at: aware instant of the top-up.
        owner_account_id: the sub-account's reseller, or ``None`` for the operator's rules.

    Returns:
        The grant, or ``None`` when no rule is in force or no tier is reached.

    Raises:
        MixedUnits: ``amount`` is not in ``currency``.
    """
    unit = money_unit(currency)
    if amount.unit != unit:
        raise MixedUnits(f"a {amount.unit.code} top-up cannot earn a {unit.code} bonus")
    rule = bonus_rule_in_force(session, currency=unit, at=at, owner_account_id=owner_account_id)
    if rule is None:
        return None
    reached = [t for t in rule.tiers if t.min_amount <= amount]
    if not reached:
        return None
    tier = reached[-1]
    if tier.bonus_amount is not None:
        bonus = tier.bonus_amount
    else:
        assert tier.bonus_pct is not None
        exact = Fraction(amount.atoms) * Fraction(tier.bonus_pct) / 100
        bonus = Amount(exact.numerator // exact.denominator, unit)
    return BonusGrant(rule.id, bonus, tier.bonus_expires_days)


# -- failed-request policies --------------------------------------------------------------

#: What a policy may do with a failed request.
TREATMENTS = ("billed", "not_billed", "output_not_billed")
DEFAULT_POLICY_ID = "default"


@dataclass(frozen=True, slots=True)
class FailedRequestPolicy:
    """A failed-request policy version: failure kind -> ``billed`` | ``not_billed`` |
    ``output_not_billed``, all five kinds present (read-only)."""

    id: str
    version: int
    rules: Mapping[str, str]
    created_at: datetime | None = field(default=None, compare=False)

    def __hash__(self) -> int:
        return hash(("failed_request_policy", self.id, self.version))


#: The built-in policy for accounts without one (not stored; ``version`` 1).
DEFAULT_FAILED_REQUEST_POLICY = FailedRequestPolicy(
    id=DEFAULT_POLICY_ID,
    version=1,
    rules=MappingProxyType(
        {
            "provider_error": "not_billed",
            "provider_truncation": "billed",
            "refusal": "billed",
            "client_disconnect": "billed",
            "empty_completion": "not_billed",
        }
    ),
)


def _policy(row: FailedRequestPolicyRow) -> FailedRequestPolicy:
    return FailedRequestPolicy(
        id=row.id,
        version=row.version,
        rules=MappingProxyType({kind: getattr(row, kind) for kind in FAILURE_KINDS}),
        created_at=row.created_at,
    )


def create_failed_request_policy(
    session: Session, *, id: str, rules: Mapping[str, object]
) -> FailedRequestPolicy:
    """Create version n+1 of a failed-request policy (version 1 for a new id).

    Omitted rules take the built-in default's value; the stored version holds all five, so a
    later change of the built-in default never changes a stored policy.

    Raises:
        InvalidCatalog: a malformed or reserved id (``default``), an unknown failure kind or
            treatment.
        CatalogConflict: another version of the same id was created concurrently (retry).
    """
    policy_id = check_id(id, what="id")
    if policy_id == DEFAULT_POLICY_ID:
        raise InvalidCatalog(
            "'default' is the built-in policy and cannot be replaced; create a policy with "
            "another id and assign it to accounts",
            field="id",
        )
    unknown = sorted(set(rules) - set(FAILURE_KINDS))
    if unknown:
        raise InvalidCatalog(
            f"unknown failure kinds {unknown}; allowed: {', '.join(FAILURE_KINDS)}",
            field="rules",
        )
    resolved: dict[str, str] = {}
    for kind in FAILURE_KINDS:
        value = rules.get(kind)
        if value is None:
            resolved[kind] = DEFAULT_FAILED_REQUEST_POLICY.rules[kind]
        elif value in TREATMENTS:
            assert isinstance(value, str)
            resolved[kind] = value
        else:
            raise InvalidCatalog(
                f"rules.{kind} must be one of {', '.join(TREATMENTS)}, got {value!r}",
                field=f"rules.{kind}",
            )
    latest = session.scalar(
        select(FailedRequestPolicyRow.version)
        .where(FailedRequestPolicyRow.id == policy_id)
        .order_by(FailedRequestPolicyRow.version.desc())
        .limit(1)
    )
    row = FailedRequestPolicyRow(
        id=policy_id, version=(latest or 0) + 1, created_at=utcnow(), **resolved
    )
    with conflict_as(
        session,
        f"another version of policy {policy_id} was created at the same time; retry",
        policy_id=policy_id,
    ):
        session.add(row)
    return _policy(row)


def get_failed_request_policy(
    session: Session, policy_id: str | None, *, version: int | None = None
) -> FailedRequestPolicy:
    """A policy's latest version (or ``version``); ``None`` or ``"default"`` is the built-in.

    Raises:
        NotFound: no such policy (or version).
    """
    if policy_id is None or policy_id == DEFAULT_POLICY_ID:
        if version not in (None, DEFAULT_FAILED_REQUEST_POLICY.version):
            raise NotFound(f"the built-in default policy has no version {version}")
        return DEFAULT_FAILED_REQUEST_POLICY
    stmt = select(FailedRequestPolicyRow).where(FailedRequestPolicyRow.id == policy_id)
    if version is not None:
        stmt = stmt.where(FailedRequestPolicyRow.version == version)
    row = session.scalars(stmt.order_by(FailedRequestPolicyRow.version.desc()).limit(1)).first()
    if row is None:
        which = policy_id if version is None else f"{policy_id} version {version}"
        raise NotFound(f"failed-request policy {which} does not exist", policy_id=policy_id)
    return _policy(row)


def list_failed_request_policies(
    session: Session, *, limit: int = 20, starting_after: str | None = None
) -> Page[FailedRequestPolicy]:
    """The latest version of every stored policy, by id (the built-in default is not listed)."""
    limit = page_limit(limit)
    stmt = (
        select(FailedRequestPolicyRow)
        .ext(distinct_on(FailedRequestPolicyRow.id))
        .order_by(FailedRequestPolicyRow.id, FailedRequestPolicyRow.version.desc())
        .limit(limit + 1)
    )
    if starting_after:
        stmt = stmt.where(FailedRequestPolicyRow.id > starting_after)
    rows = list(session.scalars(stmt))
    return Page(tuple(_policy(r) for r in rows[:limit]), len(rows) > limit)


def list_failed_request_policy_versions(
    session: Session, policy_id: str
) -> list[FailedRequestPolicy]:
    """Every version of a policy, oldest first.

    Raises:
        NotFound: no such policy.
    """
    if policy_id == DEFAULT_POLICY_ID:
        return [DEFAULT_FAILED_REQUEST_POLICY]
    rows = list(
        session.scalars(
            select(FailedRequestPolicyRow)
            .where(FailedRequestPolicyRow.id == policy_id)
            .order_by(FailedRequestPolicyRow.version)
        )
    )
    if not rows:
        raise NotFound(f"failed-request policy {policy_id} does not exist", policy_id=policy_id)
    return [_policy(r) for r in rows]
