"""``/v1/contracts``: negotiated per-model discounts of an account."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, Request, get
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import requires
from api.idempotency import idempotent_post
from api.routes.catalog._common import PCT_DESC, pct_str
from api.schemas import PCT_PATTERN, IdempotencyKey, Limit, Page
from plans import catalog
from wallet.accounts import get_account
from wallet.errors import InvalidRequest


class ContractDiscountIn(BaseModel):
    """``pct`` off ``model``; without ``model``, off every model that has no own discount."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(default=None, min_length=1, max_length=128)
    pct: str = Field(
        examples=["15"], description=PCT_DESC, json_schema_extra={"pattern": PCT_PATTERN}
    )


class ContractIn(BaseModel):
    """A new contract version for an account (supersedes older ones from ``starts_at``).

    It locks a rate card, grants discounts, or both.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["rate_card_id"], "properties": {"rate_card_id": {"type": "string"}}},
                {"required": ["discounts"], "properties": {"discounts": {"minItems": 1}}},
            ]
        },
    )
    account_id: str = Field(min_length=1, max_length=64)
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    rate_card_id: str | None = None
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    discounts: list[ContractDiscountIn] = Field(default=[], max_length=1000)


class ContractOut(BaseModel):
    """A contract version."""

    id: str
    account_id: str
    currency: str
    version: int
    rate_card_id: str | None
    starts_at: datetime | None
    ends_at: datetime | None
    discounts: list[ContractDiscountIn]
    created_at: datetime


def _contract_out(c: catalog.ContractSpec) -> ContractOut:
    return ContractOut(
        id=c.id,
        account_id=c.account_id,
        currency=c.currency.code,
        version=c.version,
        rate_card_id=c.rate_card_id,
        starts_at=c.starts_at,
        ends_at=c.ends_at,
        discounts=[ContractDiscountIn(model=d.model, pct=pct_str(d.pct)) for d in c.discounts],
        created_at=c.created_at,
    )


def _same_currency(data: ContractIn, db: Session) -> None:
    """Refuse a contract in another currency than its account's.

    Raises:
        NotFound: the account does not exist.
        InvalidRequest: the currencies differ.
    """
    account = get_account(db, data.account_id)
    if account.currency != data.currency.upper():
        raise InvalidRequest(
            f"account {account.id} pays in {account.currency}; its contract must too"
        )


class ContractsController(Controller):
    """Account contracts (admin)."""

    path = "/v1/contracts"
    tags = ["catalog"]
    guards = [requires()]

    @idempotent_post(check=_same_currency)
    def create_contract(
        self,
        request: Request[Any, Any, Any],
        data: ContractIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> ContractOut:
        """Create the account's next contract version; ``starts_at`` defaults to now."""
        return _contract_out(
            catalog.create_contract(
                db,
                account_id=data.account_id,
                currency=data.currency,
                rate_card_id=data.rate_card_id,
                starts_at=data.starts_at,
                ends_at=data.ends_at,
                discounts=[d.model_dump() for d in data.discounts],
            )
        )

    @get("/", sync_to_thread=True)
    def list_contracts(
        self,
        db: Session,
        account_id: str | None = None,
        limit: Limit = 20,
        starting_after: str | None = None,
    ) -> Page[ContractOut]:
        """Contract versions in creation order, optionally of one ``account_id``."""
        page = catalog.list_contracts(
            db, account_id=account_id, limit=limit, starting_after=starting_after
        )
        return Page[ContractOut](
            data=[_contract_out(c) for c in page.items], has_more=page.has_more
        )

    @get("/{contract_id:str}", sync_to_thread=True)
    def get_contract(self, contract_id: str, db: Session) -> ContractOut:
        """One contract version."""
        return _contract_out(catalog.get_contract(db, contract_id))


# -- reseller price books -----------------------------------------------------------------
