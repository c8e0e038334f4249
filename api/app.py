"""The Litestar application: the composition root of the HTTP API."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from sqlalchemy.engine import Engine

from api.auth import ApiKeyAuthMiddleware
from api.batcher import Batcher
from api.boundary import check_request
from api.db import make_sessionmaker
from api.deps import provide_db, provide_principal
from api.errors import EXCEPTION_HANDLERS
from api.payments import gateway_from_settings
from api.routes import (
    accounts,
    catalog,
    invoices,
    keys,
    overage_payments,
    payments,
    reports,
    stripe_webhooks,
    system,
    usage,
    webhooks,
)
from api.settings import Settings, get_settings
from invoicing.payments.gateway import PaymentGateway

API_VERSION = "0.1.0"
PUBLIC_PATHS = ["^/health$", "^/metrics$", "^/schema", "^/v1/webhooks/stripe$"]


class MetricsController(PrometheusController):
    """Prometheus text format at ``/metrics``."""

    path = "/metrics"
    include_in_schema = False


def tune_gc() -> None:
    """Collector settings for a long-running server: what exists at startup (modules, the
    app, caches) is frozen out of every collection, and young objects are collected less
    often. A full collection every few hundred requests made the slowest requests several
    times slower than the median."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def create_app(
    engine: Engine,
    *,
    settings: Settings | None = None,
    scheduler: bool = False,
    clock: Callable[[], datetime] | None = None,
    payment_gateway: PaymentGateway | None = None,
) -> Litestar:
    """Build the app on ``engine``; with ``scheduler`` the periodic jobs run in this process.

    ``clock`` replaces "now" for the handlers that take a time (tests drive months with it).
    ``payment_gateway`` replaces the Stripe gateway built from the settings (tests inject one
    whose HTTP client is offline); without either, card payments answer 503.
    """
    cfg = settings or get_settings()
    gateway = payment_gateway if payment_gateway is not None else gateway_from_settings(cfg)
    factory = make_sessionmaker(engine)
    batcher = Batcher(factory, threads=cfg.tokenwallet_gateway_threads, clock=clock)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        sched = None
        if scheduler:
            from api.scheduler import start_background

            sched = start_background(factory, cfg)
        try:
            yield
        finally:
            batcher.stop()
            if sched is not None:
                sched.shutdown(wait=False)

    prometheus = PrometheusConfig(
        app_name="tokenwallet",
        prefix="tokenwallet",
        group_path=True,
        # the gateway hot path counts its calls in api/metrics.py instead
        exclude=["^/metrics$", "^/schema", "^/v1/usage$", "^/v1/authorizations"],
    )
    route_handlers: list[Any] = [
        system.health,
        MetricsController,
        keys.ApiKeysController,
        accounts.AccountsController,
        accounts.TopupsController,
        accounts.SubscriptionsController,
        webhooks.WebhookEndpointsController,
        webhooks.WebhookDeliveriesController,
        overage_payments.OveragePaymentsController,
        usage.UsageController,
        usage.AuthorizationsController,
        usage.usage_totals,
        catalog.ModelsController,
        catalog.RateCardsController,
        catalog.RatingWatermarksController,
        catalog.ContractsController,
        catalog.ResellerPriceBooksController,
        catalog.PriceQuotesController,
        catalog.PackagesController,
        catalog.PlansController,
        catalog.TopupBonusRulesController,
        catalog.FailedRequestPoliciesController,
        invoices.BillingPeriodsController,
        invoices.InvoicesController,
        invoices.TaxProfilesController,
        reports.ReportsController,
        payments.PaymentsController,
        payments.ReconciliationsController,
        stripe_webhooks.stripe_webhook,
    ]
    return Litestar(
        route_handlers=route_handlers,
        dependencies={
            "db": Provide(provide_db),
            "principal": Provide(provide_principal, sync_to_thread=False),
        },
        middleware=[
            prometheus.middleware,
            DefineMiddleware(ApiKeyAuthMiddleware, exclude=PUBLIC_PATHS),
        ],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        before_request=check_request,
        state=State(
            {
                "engine": engine,
                "sessionmaker": factory,
                "settings": cfg,
                "clock": clock,
                "payments": gateway,
                "batcher": batcher,
            }
        ),
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="tokenwallet",
            version=API_VERSION,
            description="Prepaid token wallet and billing API. Money is decimal strings.",
            components=Components(
                security_schemes={"apiKey": SecurityScheme(type="http", scheme="bearer")}
            ),
            security=[{"apiKey": []}],
            path="/schema",
        ),
    )
