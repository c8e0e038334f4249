"""Account contracts in the database: versions per (account, currency).

The contract in force at ``at`` is the highest version whose term ``[starts_at, ends_at)``
contains ``at`` (``starts_at`` defaults to the creation instant), so a new contract supersedes
the older ones from its ``starts_at`` on and an older one applies again after a newer one's
``ends_at``. A contract takes effect strictly after the rating watermark
(:mod:`plans.watermark`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from ledger.base import utcnow
from ledger.units import Unit
from plans._db import (
    Page,
    check_aware,
    check_models,
    clean_decimal,
    found,
    insert_version,
    list_rows,
    money_unit,
    new_id,
    rows_by_parent,
)
from plans.discounts import ContractDiscount, all_models_pct, check_markups, parse_discounts
from plans.errors import InvalidCatalog
from plans.markups import contract_prices, markups_from
from plans.models import ContractDiscountRow, ContractRow
from plans.pricebook import Contract
from plans.prices import RateCard
from plans.rate_cards import get_rate_card
from plans.watermark import refuse_backdated


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


def contract_specs(session: Session, rows: list[ContractRow]) -> list[ContractSpec]:
    """The contract versions of ``rows`` with their discounts (one query), in order."""
    by_contract = rows_by_parent(
        session, ContractDiscountRow.contract_id, rows, ContractDiscountRow.model
    )
    return [_contract_spec(row, by_contract[row.id]) for row in rows]


def pure_contract(spec: ContractSpec, card: RateCard | None) -> Contract:
    """The pure contract of a stored version, with its locked ``card`` (if any).

    Raises:
        InvalidCatalog, InvalidPrice: see :class:`plans.pricebook.Contract`.
    """
    return Contract(
        id=spec.id,
        card=card,
        starts_at=spec.starts_at,
        ends_at=spec.ends_at,
        discounts_pct={d.model: d.pct for d in spec.discounts if d.model is not None},
        all_models_discount_pct=all_models_pct(spec.discounts),
    )


def check_account_id(value: object, what: str) -> str:
    """An account id as the catalog takes it: opaque, non-blank, at most 64 characters.

    Raises:
        InvalidCatalog: anything else.
    """
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
    account_id = check_account_id(account_id, "account_id")
    unit = money_unit(currency)
    now = utcnow()
    start, end = _term(starts_at, ends_at, now)
    parsed = parse_discounts(discounts)
    check_models(session, [d.model for d in parsed if d.model is not None], what="discounts")
    card = _locked_card(session, rate_card_id, unit)
    spec = ContractSpec(
        id=new_id("ct"),
        account_id=account_id,
        currency=unit,
        version=_next_version(session, account_id, unit),
        rate_card_id=rate_card_id,
        starts_at=start,
        ends_at=end,
        discounts=tuple(parsed),
        created_at=now,
    )
    _store(session, spec, pure_contract(spec, card))  # the pure contract validates
    return spec


def _store(session: Session, spec: ContractSpec, contract: Contract) -> None:
    """Insert a new contract version, or refuse it.

    Refused when a markup of the account (a reseller) over its prices would not rate exactly,
    or when it would start at or before the usage already priced.
    """
    unit, account_id = spec.currency, spec.account_id
    check_markups(
        contract_prices(session, contract, unit, spec.created_at),
        markups_from(session, account_id, unit, spec.created_at),
    )
    assert spec.starts_at is not None
    refuse_backdated(session, unit, spec.starts_at, f"contract for account {account_id}")
    insert_version(
        session,
        _contract_row(spec),
        [
            ContractDiscountRow(contract_id=spec.id, model=d.model, pct=d.pct)
            for d in spec.discounts
            if d.model is not None
        ],
        f"another contract version for account {account_id} was created at the same time; retry",
    )


def _term(
    starts_at: datetime | None, ends_at: datetime | None, now: datetime
) -> tuple[datetime, datetime | None]:
    """A contract's ``[start, end)``: ``starts_at`` defaults to ``now``; aware and ordered."""
    start = now if starts_at is None else check_aware(starts_at, what="starts_at")
    end = None if ends_at is None else check_aware(ends_at, what="ends_at")
    if end is not None and end <= start:
        raise InvalidCatalog(
            f"ends_at ({end.isoformat()}) must be after starts_at ({start.isoformat()})",
            field="ends_at",
        )
    return start, end


def _locked_card(session: Session, rate_card_id: str | None, unit: Unit) -> RateCard | None:
    """The card a contract locks (``None``: it discounts the list), in the contract's currency."""
    if rate_card_id is None:
        return None
    card = get_rate_card(session, rate_card_id)
    if card.currency != unit:
        raise InvalidCatalog(
            f"rate card {rate_card_id} is in {card.currency.code}, the contract in {unit.code}",
            field="rate_card_id",
        )
    return card


def _next_version(session: Session, account_id: str, unit: Unit) -> int:
    """The version number a new contract of (account, currency) takes."""
    latest = session.scalar(
        select(func.max(ContractRow.version)).where(
            ContractRow.account_id == account_id, ContractRow.currency == unit.code
        )
    )
    return (latest or 0) + 1


def _contract_row(spec: ContractSpec) -> ContractRow:
    return ContractRow(
        id=spec.id,
        account_id=spec.account_id,
        currency=spec.currency.code,
        version=spec.version,
        rate_card_id=spec.rate_card_id,
        starts_at=spec.starts_at,
        ends_at=spec.ends_at,
        all_models_discount_pct=all_models_pct(spec.discounts),
        created_at=spec.created_at,
    )


def get_contract(session: Session, contract_id: str) -> ContractSpec:
    """A contract version by id.

    Raises:
        NotFound: no such contract.
    """
    row = found(
        session.get(ContractRow, contract_id), f"contract {contract_id}", contract_id=contract_id
    )
    return contract_specs(session, [row])[0]


def list_contracts(
    session: Session,
    *,
    account_id: str | None = None,
    limit: int = 20,
    starting_after: str | None = None,
) -> Page[ContractSpec]:
    """Contract versions in creation order, optionally of one account."""
    return list_rows(
        session,
        ContractRow,
        lambda rows: contract_specs(session, rows),
        where=[(ContractRow.account_id, account_id)],
        limit=limit,
        starting_after=starting_after,
    )


def contract_in_force(
    session: Session, account_id: str, currency: Unit | str, at: datetime
) -> Contract | None:
    """The account's contract in force at ``at``: the highest version whose term contains it.

    Raises:
        InvalidCatalog: a naive ``at``.
    """
    unit = money_unit(currency)
    at = check_aware(at, what="at")
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
    spec = contract_specs(session, [row])[0]
    card = get_rate_card(session, spec.rate_card_id) if spec.rate_card_id else None
    return pure_contract(spec, card)


def open_contracts(
    session: Session, account_id: str, unit: Unit, now: datetime
) -> list[ContractSpec]:
    """The account's contract versions whose term has not ended by ``now``, oldest first."""
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
    return contract_specs(session, rows)
