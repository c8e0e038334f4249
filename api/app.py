"""The Litestar application: the composition root of the HTTP API."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
from litestar import Controller, Litestar, Response, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.accesslog import AccessLog
from api.auth import ApiKeyAuthMiddleware
from api.batcher import Batcher
from api.boundary import check_request
from api.db import make_sessionmaker
from api.deps import provide_db, provide_principal
from api.errors import EXCEPTION_HANDLERS, problem_details_plugin
from api.logs import quiet_noisy_loggers
from api.metrics import refresh_db_metrics
from api.openapi import install
from api.payments import gateway_from_settings
from api.routes import (
    accounts,
    audit,
    authorizations,
    billing_periods,
    billing_profiles,
    catalog,
    history,
    invoices,
    keys,
    litellm_receiver,
    overage_payments,
    payments,
    reports,
    stripe_webhooks,
    subscriptions,
    system,
    topups,
    usage,
    webhooks,
)
from api.settings import Settings, get_settings
from invoicing.payments.gateway import PaymentGateway

API_VERSION = "0.1.0"
PUBLIC_PATHS = ["^/health$", "^/metrics$", "^/schema", "^/v1/webhooks/stripe$"]
#: Swagger UI's files, served from the installed ``swagger-ui-py`` package (no CDN)
SCHEMA_ASSETS = "/schema/assets"


def _swagger_ui_dir() -> Path:
    import swagger_ui

    return Path(swagger_ui.__file__).parent / "static"


def _docs_plugin() -> SwaggerRenderPlugin:
    """Swagger UI at ``/schema`` (and ``/schema/swagger``), every asset served locally."""
    return SwaggerRenderPlugin(
        js_url=f"{SCHEMA_ASSETS}/swagger-ui-bundle.js",
        css_url=f"{SCHEMA_ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{SCHEMA_ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{SCHEMA_ASSETS}/favicon-32x32.png'>",
    )


class MetricsController(Controller):
    """Prometheus text format at ``/metrics``.

    The HTTP counters of the middleware and the business metrics of api/metrics.py (the
    database-derived ones read in a worker thread).
    """

    path = "/metrics"
    include_in_schema = False

    @get()
    async def scrape(self, state: State) -> Response[bytes]:
        """Every metric of this process."""
        await anyio.to_thread.run_sync(refresh_db_metrics, state.sessionmaker)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def _fix_options_allow(app: Litestar) -> None:
    """Litestar answers OPTIONS with ``Allow`` built by the route that first registered a path.

    When more handlers join the path later (a controller's GET after its POST), the route is rebuilt
    but keeps that first OPTIONS handler, whose ``Allow`` misses the later methods. Point each
    OPTIONS handler at the route that serves it.
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for route_handler in route.route_handlers:
            fn: Any = getattr(route_handler, "fn", None)
            if getattr(fn, "__name__", "") != "options_handler" or not fn.__closure__:
                continue
            for name, cell in zip(fn.__code__.co_freevars, fn.__closure__, strict=True):
                if name == "self" and isinstance(cell.cell_contents, HTTPRoute):
                    cell.cell_contents = route


def tune_gc() -> None:
    """Collector settings for a long-running server.

    What exists at startup (modules, the app, caches) is frozen out of every collection, and young
    objects are collected less often. A full collection every few hundred requests made the slowest
    requests several times slower than the median.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _route_handlers() -> list[Any]:
    """Every route of the API, grouped by resource, and the Swagger UI's assets."""
    return [
        system.health,
        MetricsController,
        keys.ApiKeysController,
        accounts.AccountsController,
        subscriptions.AccountPurchasesController,
        topups.AccountTopupsController,
        topups.TopupsController,
        subscriptions.SubscriptionsController,
        history.AccountHistoryController,
        audit.AuditEventsController,
        webhooks.WebhookEndpointsController,
        webhooks.WebhookDeliveriesController,
        overage_payments.OveragePaymentsController,
        usage.UsageController,
        authorizations.AuthorizationsController,
        usage.usage_totals,
        litellm_receiver.LiteLLMReceiver,
        catalog.ModelsController,
        catalog.RateCardsController,
        catalog.CostCardsController,
        catalog.RatingWatermarksController,
        catalog.ContractsController,
        catalog.ResellerPriceBooksController,
        catalog.PriceQuotesController,
        catalog.PackagesController,
        catalog.PlansController,
        catalog.TopupBonusRulesController,
        catalog.FailedRequestPoliciesController,
        billing_periods.BillingPeriodsController,
        invoices.InvoicesController,
        billing_profiles.TaxProfilesController,
        reports.ReportsController,
        payments.PaymentsController,
        payments.ReconciliationsController,
        stripe_webhooks.stripe_webhook,
        create_static_files_router(
            SCHEMA_ASSETS, directories=[_swagger_ui_dir()], include_in_schema=False
        ),
    ]


def _openapi_config() -> OpenAPIConfig:
    """The document's metadata, its bearer-key security scheme and Swagger UI at ``/schema``."""
    return OpenAPIConfig(
        title="tokenwallet",
        version=API_VERSION,
        description="Prepaid token wallet and billing API. Money is decimal strings.",
        components=Components(
            security_schemes={"apiKey": SecurityScheme(type="http", scheme="bearer")}
        ),
        security=[{"apiKey": []}],
        path="/schema",
        render_plugins=[_docs_plugin()],
    )


def _middleware() -> list[Any]:
    """Prometheus' HTTP counters, then API-key authentication (public paths excepted)."""
    prometheus = PrometheusConfig(
        app_name="tokenwallet",
        prefix="tokenwallet",
        group_path=True,
        # the gateway hot path counts its calls in api/metrics.py instead
        exclude=["^/metrics$", "^/schema", "^/v1/usage$", "^/v1/authorizations"],
    )
    return [prometheus.middleware, DefineMiddleware(ApiKeyAuthMiddleware, exclude=PUBLIC_PATHS)]


def _lifespan(
    factory: sessionmaker[Session], cfg: Settings, batcher: Batcher, *, scheduler: bool
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """Start the periodic jobs with the app when ``scheduler``; stop them and the batcher after."""

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

    return lifespan


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
    whose HTTP client is offline); without either, card payments answer 422
    ``payments_not_configured``.
    """
    cfg = settings or get_settings()
    gateway = payment_gateway if payment_gateway is not None else gateway_from_settings(cfg)
    factory = make_sessionmaker(engine)
    batcher = Batcher(factory, threads=cfg.tokenwallet_gateway_threads, clock=clock)
    route_handlers = _route_handlers()
    quiet_noisy_loggers()
    app = Litestar(
        route_handlers=route_handlers,
        dependencies={
            "db": Provide(provide_db),
            "principal": Provide(provide_principal, sync_to_thread=False),
        },
        middleware=_middleware(),
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        plugins=[problem_details_plugin()],
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
        lifespan=[_lifespan(factory, cfg, batcher, scheduler=scheduler)],
        openapi_config=_openapi_config(),
    )
    install(app)
    _fix_options_allow(app)
    # outermost: the access log sees the status every client got (401s and 404s included)
    app.asgi_handler = AccessLog(
        app.asgi_handler, gateway_sample=cfg.tokenwallet_access_log_gateway_sample
    )
    return app
