"""Tax profiles and billing profiles (net terms, tax profile, bill-to details)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from invoicing.arithmetic import parse_tax_rate
from invoicing.errors import InvalidBilling
from invoicing.models import NET_TERMS_DAYS, BillingProfile, TaxProfile
from ledger.base import utcnow
from ledger.errors import NotFound
from wallet.errors import Conflict
from wallet.models import Account

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")

#: The fields a billing profile has, all optional on input.
BILLING_FIELDS = (
    "net_terms_days",
    "tax_profile_id",
    "legal_name",
    "billing_address",
    "tax_id",
    "billing_email",
    "settle_from_prepaid",
)


def create_tax_profile(session: Session, *, id: str, name: str, rate_pct: str) -> TaxProfile:
    """Create a tax profile (a rate in percent). Profiles are never edited.

    Raises:
        InvalidBilling: bad id or rate.
        Conflict: the id exists with another name or rate (the same content is a no-op).
    """
    if not _ID_RE.match(id):
        raise InvalidBilling(
            "tax profile id must be 1-64 letters, digits or ._:- and start with one"
        )
    rate = parse_tax_rate(rate_pct)
    existing = session.get(TaxProfile, id)
    if existing is not None:
        if existing.name != name or existing.rate_pct != rate:
            raise Conflict(
                f"tax profile {id} exists with rate {existing.rate_pct}%; profiles are never"
                " edited: create a new one and move accounts to it"
            )
        return existing
    profile = TaxProfile(id=id, name=name.strip() or id, rate_pct=rate)
    session.add(profile)
    session.flush()
    return profile


def get_tax_profile(session: Session, profile_id: str) -> TaxProfile:
    """Load a tax profile.

    Raises:
        NotFound: no such profile.
    """
    profile = session.get(TaxProfile, profile_id)
    if profile is None:
        raise NotFound(f"tax profile {profile_id} does not exist")
    return profile


def list_tax_profiles(session: Session) -> list[TaxProfile]:
    """Every tax profile, by id."""
    return list(session.scalars(select(TaxProfile).order_by(TaxProfile.id)))


@dataclass(frozen=True, slots=True)
class BillingTerms:
    """An account's billing terms as the close uses them (defaults when no profile exists)."""

    net_terms_days: int
    tax_profile_id: str | None
    tax_rate_pct: Decimal | None
    bill_to: dict[str, Any]


def get_billing_profile(session: Session, account_id: str) -> BillingProfile | None:
    """The account's billing profile, if one was set."""
    return session.get(BillingProfile, account_id)


def billing_terms(session: Session, account: Account) -> BillingTerms:
    """Net terms, tax rate and bill-to snapshot for an account's next invoice."""
    profile = get_billing_profile(session, account.id)
    rate = None
    tax_id = None
    if profile is not None and profile.tax_profile_id:
        rate = get_tax_profile(session, profile.tax_profile_id).rate_pct
        tax_id = profile.tax_profile_id
    bill_to = {
        "account_id": account.id,
        "name": (profile.legal_name if profile and profile.legal_name else account.name),
        "account_name": account.name,
        "address": profile.billing_address if profile else None,
        "tax_id": profile.tax_id if profile else None,
        "email": profile.billing_email if profile else None,
    }
    return BillingTerms(profile.net_terms_days if profile else 0, tax_id, rate, bill_to)


def set_billing_profile(
    session: Session, account: Account, fields: dict[str, Any]
) -> BillingProfile:
    """Create or update the billing profile of a billing account with the given fields only.

    Raises:
        InvalidBilling: a sub-account (its reseller bills it), net terms other than 0, 30, 60
            or 90 days, an unknown tax profile, or an unknown field.
    """
    unknown = set(fields) - set(BILLING_FIELDS)
    if unknown:
        raise InvalidBilling(f"unknown billing fields: {', '.join(sorted(unknown))}")
    if account.parent_id is not None and fields:
        raise InvalidBilling(
            "a reseller's sub-account is billed by its reseller, not by the operator;"
            " set billing terms on the reseller's account"
        )
    terms = fields.get("net_terms_days")
    if "net_terms_days" in fields and terms not in NET_TERMS_DAYS:
        raise InvalidBilling(
            f"net_terms_days must be one of {', '.join(map(str, NET_TERMS_DAYS))}; got {terms}"
        )
    if fields.get("tax_profile_id") is not None:  # "" is an id too, of no profile
        get_tax_profile(session, fields["tax_profile_id"])
    profile = session.get(BillingProfile, account.id, with_for_update=True)
    if profile is None:
        profile = BillingProfile(account_id=account.id, net_terms_days=0, settle_from_prepaid=False)
        session.add(profile)
    for key, value in fields.items():
        if key == "net_terms_days" and value is None:
            value = 0
        if key == "settle_from_prepaid":
            value = bool(value)
        setattr(profile, key, value)
    profile.updated_at = utcnow()
    session.flush()
    return profile
