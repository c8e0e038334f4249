"""The catalog services: models, token packages and failed-request policies.

Coding plans, top-up bonus rules, rate cards, contracts, reseller price books, the watermark
and price resolution live in their own modules and are re-exported here (the API's one
import).

Every function takes a :class:`~sqlalchemy.orm.Session` and never commits: the caller (a
request, a job, the CLI) owns the transaction. Results are frozen dataclasses; no ORM object
leaves this module. Bad input raises a :class:`~ledger.errors.DomainError` with a stable code
before anything is written; a missing object raises :class:`~ledger.errors.NotFound`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session

from ledger.amounts import Amount, parse_money
from ledger.base import utcnow
from ledger.errors import NotFound
from ledger.units import Unit
from plans._db import (
    Page,
    check_id,
    check_int,
    check_models,
    check_text,
    conflict_as,
    found,
    insert_new,
    list_rows,
    money_unit,
    page_limit,
)
from plans.bonus_rules import (
    bonus_for_topup,
    bonus_rule_in_force,
    create_topup_bonus_rule,
    get_topup_bonus_rule,
    list_topup_bonus_rules,
)
from plans.bonuses import BonusGrant, BonusRule, BonusTier
from plans.card_diff import ModelChange, RateCardPlan
from plans.catalog_errors import BackdatedPriceChange, CatalogConflict
from plans.coding_plans import PlanSpec, WindowSpec, create_plan, get_plan, list_plans
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
    CatalogModel,
    FailedRequestPolicyRow,
    PackageRow,
)
from plans.price_context import resolve_account_price
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
    row = CatalogModel(
        id=model_id, provider=provider, display_name=display_name, created_at=utcnow()
    )
    insert_new(session, row, (), f"model {model_id}", model=model_id)
    return _model_info(row)


def get_model(session: Session, model_id: str) -> ModelInfo:
    """A model by id.

    Raises:
        NotFound: no such model.
    """
    row = found(session.get(CatalogModel, model_id), f"model {model_id}", model=model_id)
    return _model_info(row)


def list_models(
    session: Session, *, limit: int = 20, starting_after: str | None = None
) -> Page[ModelInfo]:
    """Models by id."""
    return list_rows(
        session,
        CatalogModel,
        lambda rows: map(_model_info, rows),
        limit=limit,
        starting_after=starting_after,
    )


# -- token packages -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PackageSpec:
    """A token package.

    ``tokens`` for ``price``, on ``models`` (empty: every model), usable for ``valid_days``
    after purchase.
    """

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
    insert_new(session, row, (), f"package {package_id}", package_id=package_id)
    return _package_spec(row)


def get_package(session: Session, package_id: str) -> PackageSpec:
    """A token package by id.

    Raises:
        NotFound: no such package.
    """
    row = found(session.get(PackageRow, package_id), f"package {package_id}", package_id=package_id)
    return _package_spec(row)


def list_packages(
    session: Session, *, limit: int = 20, starting_after: str | None = None
) -> Page[PackageSpec]:
    """Token packages by id."""
    return list_rows(
        session,
        PackageRow,
        lambda rows: map(_package_spec, rows),
        limit=limit,
        starting_after=starting_after,
    )


# -- failed-request policies --------------------------------------------------------------

#: What a policy may do with a failed request.
TREATMENTS = ("billed", "not_billed", "output_not_billed")
DEFAULT_POLICY_ID = "default"


@dataclass(frozen=True, slots=True)
class FailedRequestPolicy:
    """A failed-request policy version.

    Failure kind -> ``billed`` | ``not_billed`` | ``output_not_billed``, all five kinds present
    (read-only).
    """

    id: str
    version: int
    rules: Mapping[str, str]
    created_at: datetime | None = field(default=None, compare=False)

    def __hash__(self) -> int:
        """Hash by id and version (the rules mapping is not hashable)."""
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
