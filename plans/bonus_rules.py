"""Top-up bonus rules in the database: versions by ``effective_from`` per (currency, owner).

``owner_account_id`` ``None`` is the operator's rule for its direct customers; otherwise a
reseller's rule for its sub-accounts, which never fall back to the operator's (the reseller
pays their bonus). What a top-up earns is :func:`plans.bonuses.bonus_earned`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.amounts import Amount, parse_money
from ledger.base import utcnow
from ledger.errors import MixedUnits
from ledger.units import Unit
from plans._db import (
    Page,
    check_aware,
    check_int,
    clean_decimal,
    found,
    insert_version,
    list_rows,
    money_unit,
    new_id,
    refuse_taken,
    rows_by_parent,
    version_at,
)
from plans.bonuses import BonusGrant, BonusRule, BonusTier, bonus_earned
from plans.errors import InvalidCatalog
from plans.models import BonusRuleRow, BonusTierRow
from plans.price_fields import parse_pct


def _rules(session: Session, rows: list[BonusRuleRow]) -> list[BonusRule]:
    tiers = rows_by_parent(session, BonusTierRow.rule_id, rows, BonusTierRow.min_amount)
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
    """Create a top-up bonus rule version.

    It supersedes the owner's earlier rules from ``effective_from`` (default: now) on.

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
    owner = _check_owner(owner_account_id)
    now = utcnow()
    start = now if effective_from is None else check_aware(effective_from, what="effective_from")
    parsed = _parse_tiers(unit, tiers)
    rule = BonusRule(new_id("br"), unit, owner, start, tuple(parsed), now)
    _store(session, rule)
    return rule


def _check_owner(owner_account_id: object) -> str | None:
    if owner_account_id is not None and (
        not isinstance(owner_account_id, str) or not owner_account_id.strip()
    ):
        raise InvalidCatalog("owner_account_id must be a non-empty account id or null")
    return owner_account_id


def _store(session: Session, rule: BonusRule) -> None:
    """Insert a new rule version, refused when the owner has one at the same instant."""
    unit, start = rule.currency, rule.effective_from
    owner = "the operator" if rule.owner_account_id is None else f"account {rule.owner_account_id}"
    message = (
        f"{owner} already has a {unit.code} top-up bonus rule taking effect at "
        f"{start.isoformat()}; rules are never edited: choose another effective_from"
    )
    refuse_taken(
        session,
        select(BonusRuleRow.id).where(
            BonusRuleRow.currency == unit.code,
            BonusRuleRow.owner_account_id.is_not_distinct_from(rule.owner_account_id),
            BonusRuleRow.effective_from == start,
        ),
        message,
        key="rule_id",
    )
    head = BonusRuleRow(
        id=rule.id,
        currency=unit.code,
        owner_account_id=rule.owner_account_id,
        effective_from=start,
        created_at=rule.created_at,
    )
    tiers = [
        BonusTierRow(
            rule_id=rule.id,
            min_amount=t.min_amount.atoms,
            bonus_pct=t.bonus_pct,
            bonus_amount=None if t.bonus_amount is None else t.bonus_amount.atoms,
            bonus_expires_days=t.bonus_expires_days,
        )
        for t in rule.tiers
    ]
    insert_version(session, head, tiers, message)


def get_topup_bonus_rule(session: Session, rule_id: str) -> BonusRule:
    """A bonus rule version by id.

    Raises:
        NotFound: no such rule.
    """
    row = found(session.get(BonusRuleRow, rule_id), f"top-up bonus rule {rule_id}", rule_id=rule_id)
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
    code = money_unit(currency).code if currency is not None else None
    return list_rows(
        session,
        BonusRuleRow,
        lambda rows: _rules(session, rows),
        where=[(BonusRuleRow.currency, code), (BonusRuleRow.owner_account_id, owner_account_id)],
        limit=limit,
        starting_after=starting_after,
    )


def bonus_rule_in_force(
    session: Session, *, currency: Unit | str, at: datetime, owner_account_id: str | None = None
) -> BonusRule | None:
    """The owner's rule in force at ``at``: the greatest ``effective_from <= at``.

    A reseller's sub-accounts use only their reseller's rules (the reseller pays for their
    bonus); they never fall back to the operator's.
    """
    unit = money_unit(currency)
    at = check_aware(at, what="at")
    row = version_at(
        session,
        BonusRuleRow,
        at,
        BonusRuleRow.currency == unit.code,
        BonusRuleRow.owner_account_id.is_not_distinct_from(owner_account_id),
    )
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
    return None if rule is None else bonus_earned(rule, amount)
