"""``/v1/token-packages``: prepaid token packages."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import requires
from api.idempotency import idempotent_post
from api.routes.catalog._common import CATALOG_ID, MODEL_IDS, READERS
from api.routes.catalog.prices import money_str
from api.schemas import MONEY_PATTERN, IdempotencyKey, Limit, Page
from plans import catalog


class TokenPackageIn(BaseModel):
    """A token package.

    ``tokens`` for ``price``, on ``models`` (empty: all), usable for ``valid_days`` after purchase.
    """

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=128, examples=["pk-1m"], json_schema_extra=CATALOG_ID)
    name: str = Field(min_length=1, max_length=200)
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    price: str = Field(
        examples=["9.00"],
        description="decimal string, whole minor units",
        json_schema_extra={"pattern": MONEY_PATTERN},
    )
    tokens: int = Field(strict=True, ge=1, le=10**15, examples=[1_000_000])
    models: list[str] = Field(default=[], max_length=1000, json_schema_extra=MODEL_IDS)
    valid_days: int = Field(strict=True, ge=1, le=36_500, examples=[30])


class TokenPackageOut(BaseModel):
    """A token package."""

    id: str
    name: str
    currency: str
    price: str
    tokens: int
    models: list[str]
    valid_days: int


def _package_out(p: catalog.PackageSpec) -> TokenPackageOut:
    return TokenPackageOut(
        id=p.id,
        name=p.name,
        currency=p.currency.code,
        price=money_str(p.price),
        tokens=p.tokens,
        models=list(p.models),
        valid_days=p.valid_days,
    )


class PackagesController(Controller):
    """Token packages (admin)."""

    path = "/v1/packages"
    tags = ["catalog"]

    @idempotent_post(guards=[requires()])
    def create_package(
        self,
        request: Request[Any, Any, Any],
        data: TokenPackageIn,
        db: Session,
        idempotency_key: IdempotencyKey = None,
    ) -> TokenPackageOut:
        """Add a token package; 409 ``conflict`` if the id exists."""
        return _package_out(
            catalog.create_package(
                db,
                id=data.id,
                name=data.name,
                currency=data.currency,
                price=data.price,
                tokens=data.tokens,
                models=data.models,
                valid_days=data.valid_days,
            )
        )

    @get("/", sync_to_thread=True, guards=[requires(*READERS)])
    def list_packages(
        self, db: Session, limit: Limit = 20, starting_after: str | None = None
    ) -> Page[TokenPackageOut]:
        """Token packages by id."""
        page = catalog.list_packages(db, limit=limit, starting_after=starting_after)
        return Page[TokenPackageOut](
            data=[_package_out(p) for p in page.items], has_more=page.has_more
        )

    @get("/{package_id:str}", sync_to_thread=True, guards=[requires(*READERS)])
    def get_package(self, package_id: str, db: Session) -> TokenPackageOut:
        """One token package."""
        return _package_out(catalog.get_package(db, package_id))


# -- coding plans -------------------------------------------------------------------------
