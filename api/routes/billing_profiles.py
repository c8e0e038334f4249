"""The billing fields of accounts (terms, bill-to, tax profile) and the tax profiles."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from litestar import Controller, Request, get
from litestar.datastructures import State
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from api.auth import Principal, requires
from api.idempotency import idempotent_post
from api.schemas import DecimalString, IdempotencyKey
from invoicing.models import BillingProfile, TaxProfile
from invoicing.profiles import create_tax_profile, list_tax_profiles
from ledger.decimals import format_pct as _pct

# -- account billing fields ------------------------------------------------------------------


class BillingIn(BaseModel):
    """Billing terms of a billing account (top-level accounts only)."""

    model_config = ConfigDict(extra="forbid")
    net_terms_days: Literal[0, 30, 60, 90] | None = Field(
        default=None,
        description="payment terms: due on receipt (0) or net 30, 60, 90 days",
        json_schema_extra={"enum": [0, 30, 60, 90]},  # null is refused; leave it out instead
    )
    tax_profile: str | None = Field(
        default=None, min_length=1, max_length=64, description="id of a tax profile"
    )
    legal_name: str | None = Field(default=None, max_length=300)
    billing_address: str | None = Field(default=None, max_length=1000)
    tax_id: str | None = Field(default=None, max_length=100)
    billing_email: str | None = Field(default=None, max_length=300)
    settle_from_prepaid: bool | None = Field(
        default=None,
        description="settle the tax on prepaid consumption from the paid credit when the"
        " invoice is finalized (default false: the customer pays it)",
    )

    # Litestar validates bodies in lax mode (``strict=True`` on a field is overridden), where JSON
    # false passed as 0 days and 0 or "yes" as a boolean.
    @field_validator("net_terms_days", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("net_terms_days is a number of days: 0, 30, 60 or 90")
        return value

    @field_validator("settle_from_prepaid", mode="before")
    @classmethod
    def _a_bool(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, bool):
            raise ValueError("settle_from_prepaid is true or false")
        return value

    def fields(self) -> dict[str, Any]:
        """The fields that were sent, keyed as the service names them."""
        sent = self.model_dump(exclude_unset=True)
        if "tax_profile" in sent:
            sent["tax_profile_id"] = sent.pop("tax_profile")
        return sent


class BillingOut(BaseModel):
    """An account's billing terms."""

    net_terms_days: int
    tax_profile: str | None
    legal_name: str | None
    billing_address: str | None
    tax_id: str | None
    billing_email: str | None
    settle_from_prepaid: bool


def billing_out(profile: BillingProfile | None) -> BillingOut | None:
    """Wire form of a billing profile (None when the account has none)."""
    if profile is None:
        return None
    return BillingOut(
        net_terms_days=profile.net_terms_days,
        tax_profile=profile.tax_profile_id,
        legal_name=profile.legal_name,
        billing_address=profile.billing_address,
        tax_id=profile.tax_id,
        billing_email=profile.billing_email,
        settle_from_prepaid=profile.settle_from_prepaid,
    )


# -- tax profiles ----------------------------------------------------------------------------


class TaxProfileIn(BaseModel):
    """A tax rate in percent. Profiles are never edited; create a new one for a new rate."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(
        min_length=1,
        max_length=64,
        json_schema_extra={"pattern": r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"},  # profiles._ID_RE
    )
    name: str = Field(default="", max_length=200)
    rate_pct: DecimalString = Field(
        description='0 to 100, at most 4 decimals, e.g. "20"',
        json_schema_extra={"pattern": r"^(100(\.0{1,4})?|[0-9]{1,2}(\.[0-9]{1,4})?)$"},
    )


class TaxProfileOut(BaseModel):
    """A tax profile."""

    id: str
    name: str
    rate_pct: str
    created_at: datetime


def tax_profile_out(p: TaxProfile) -> TaxProfileOut:
    """Wire form of a tax profile."""
    return TaxProfileOut(id=p.id, name=p.name, rate_pct=_pct(p.rate_pct), created_at=p.created_at)


class TaxProfilesController(Controller):
    """``/v1/tax-profiles`` (admin, finance)."""

    path = "/v1/tax-profiles"
    tags = ["month end"]
    guards = [requires("finance")]

    @idempotent_post()
    def create(
        self,
        request: Request[Principal, Principal, State],
        data: TaxProfileIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> TaxProfileOut:
        """Create a tax profile (repeating the same profile is harmless)."""
        return tax_profile_out(
            create_tax_profile(db, id=data.id, name=data.name, rate_pct=data.rate_pct)
        )

    @get("/", sync_to_thread=True)
    def list_profiles(self, db: Session) -> list[TaxProfileOut]:
        """Every tax profile."""
        return [tax_profile_out(p) for p in list_tax_profiles(db)]
