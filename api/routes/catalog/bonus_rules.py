"""``/v1/topup-bonus-rules``: bonus credit on top-ups."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, Request, get
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.idempotency import idempotent_post
from api.openapi import only
from api.routes.catalog._common import (
    acting_reseller,
    hide_others,
    owner_filter,
    pct_str,
    reseller_of,
)
from api.routes.catalog.prices import money_str
from api.schemas import MONEY_PATTERN, PCT_PATTERN, IdempotencyKey, Limit, Page
from plans import catalog


class BonusTierIn(BaseModel):
    """From ``min_amount`` on.

    ``bonus_pct`` percent of the top-up or a fixed ``bonus_amount`` (exactly one), expiring after
    ``bonus_expires_days`` (null: never).
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [only("bonus_pct", "bonus_amount"), only("bonus_amount", "bonus_pct")]
        },
    )
    min_amount: str = Field(examples=["100.00"], json_schema_extra={"pattern": MONEY_PATTERN})
    bonus_pct: str | None = Field(
        default=None, examples=["5"], json_schema_extra={"pattern": PCT_PATTERN}
    )
    bonus_amount: str | None = Field(
        default=None, examples=["25.00"], json_schema_extra={"pattern": MONEY_PATTERN}
    )
    bonus_expires_days: int | None = Field(default=None, strict=True, ge=1, le=36_500)


class BonusRuleIn(BaseModel):
    """A top-up bonus rule version for ``currency``.

    And ``owner_account_id``: a reseller's rule for its sub-accounts; null: the operator's. The
    highest tier reached applies.
    """

    model_config = ConfigDict(extra="forbid")
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    tiers: list[BonusTierIn] = Field(max_length=100)
    owner_account_id: str | None = Field(default=None, min_length=1, max_length=64)
    effective_from: AwareDatetime | None = None


class BonusRuleOut(BaseModel):
    """A top-up bonus rule version."""

    id: str
    currency: str
    owner_account_id: str | None
    effective_from: datetime
    tiers: list[BonusTierIn]
    created_at: datetime


def _rule_out(r: catalog.BonusRule) -> BonusRuleOut:
    return BonusRuleOut(
        id=r.id,
        currency=r.currency.code,
        owner_account_id=r.owner_account_id,
        effective_from=r.effective_from,
        tiers=[
            BonusTierIn(
                min_amount=money_str(t.min_amount),
                bonus_pct=None if t.bonus_pct is None else pct_str(t.bonus_pct),
                bonus_amount=None if t.bonus_amount is None else money_str(t.bonus_amount),
                bonus_expires_days=t.bonus_expires_days,
            )
            for t in r.tiers
        ],
        created_at=r.created_at,
    )


class TopupBonusRulesController(Controller):
    """Top-up bonus rules (admin; a reseller for top-ups it records on its sub-accounts)."""

    path = "/v1/topup-bonus-rules"
    tags = ["catalog"]
    guards = [requires("reseller")]

    @idempotent_post(check=acting_reseller("owner_account_id"))
    def create_rule(
        self,
        request: Request[Any, Any, Any],
        data: BonusRuleIn,
        db: Session,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> BonusRuleOut:
        """Create a bonus rule version; ``effective_from`` defaults to now.

        A reseller's rules (``owner_account_id``; a reseller key always owns its rules) apply to
        top-ups it records on its sub-accounts.
        """
        return _rule_out(
            catalog.create_topup_bonus_rule(
                db,
                currency=data.currency,
                tiers=[t.model_dump(exclude_none=True) for t in data.tiers],
                owner_account_id=reseller_of(db, principal, data.owner_account_id),
                effective_from=data.effective_from,
            )
        )

    @get("/", sync_to_thread=True)
    def list_rules(
        self,
        db: Session,
        principal: Principal,
        currency: str | None = None,
        owner_account_id: str | None = None,
        limit: Limit = 20,
        starting_after: str | None = None,
    ) -> Page[BonusRuleOut]:
        """Bonus rule versions in creation order, optionally of one currency / owner.

        A reseller key sees its own.
        """
        page = catalog.list_topup_bonus_rules(
            db,
            currency=currency,
            owner_account_id=owner_filter(db, principal, owner_account_id),
            limit=limit,
            starting_after=starting_after,
        )
        return Page[BonusRuleOut](data=[_rule_out(r) for r in page.items], has_more=page.has_more)

    @get("/{rule_id:str}", sync_to_thread=True)
    def get_rule(self, rule_id: str, db: Session, principal: Principal) -> BonusRuleOut:
        """One bonus rule version."""
        rule = catalog.get_topup_bonus_rule(db, rule_id)
        hide_others(principal, rule.owner_account_id, f"top-up bonus rule {rule_id}")
        return _rule_out(rule)


# -- failed-request policies --------------------------------------------------------------
