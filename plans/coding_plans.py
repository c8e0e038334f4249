"""Coding plans: a monthly fee for quota windows on some models.

A plan is created once and never edited (its id is the operator's); its windows limit requests
or tokens per rolling 5 hours, week or month, and ``on_exhausted`` says what happens once one
is full (``block``, or charge the ``wallet``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ledger.amounts import Amount, parse_money
from ledger.base import utcnow
from ledger.units import Unit
from plans._db import (
    Page,
    check_id,
    check_int,
    check_models,
    check_text,
    found,
    insert_new,
    list_rows,
    money_unit,
    rows_by_parent,
)
from plans.errors import InvalidCatalog
from plans.models import PlanRow, PlanWindowRow

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
    """A coding plan.

    A monthly fee, model scope (empty: every model), quota windows, and what happens when a
    window is exhausted (``block`` or fall back to the ``wallet``).
    """

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
    windows = rows_by_parent(session, PlanWindowRow.plan_id, rows)
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
    insert_new(session, row, window_rows, f"plan {plan_id}", plan_id=plan_id)
    return _plan_spec(row, window_rows)


def get_plan(session: Session, plan_id: str) -> PlanSpec:
    """A coding plan by id.

    Raises:
        NotFound: no such plan.
    """
    row = found(session.get(PlanRow, plan_id), f"plan {plan_id}", plan_id=plan_id)
    return _plan_specs(session, [row])[0]


def list_plans(
    session: Session, *, limit: int = 20, starting_after: str | None = None
) -> Page[PlanSpec]:
    """Coding plans by id."""
    return list_rows(
        session,
        PlanRow,
        lambda rows: _plan_specs(session, rows),
        limit=limit,
        starting_after=starting_after,
    )
