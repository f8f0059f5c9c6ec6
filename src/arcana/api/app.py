"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from arcana import __version__
from arcana.api import (
    admin_jobs,
    admin_overview,
    admin_plugins,
    admin_users,
    auth,
    console,
    events,
    ops,
    products,
)
from arcana.api.errors import install_error_handlers
from arcana.api.middleware import RequestContextMiddleware
from arcana.api.openapi import install_openapi
from arcana.config import Settings, get_settings
from arcana.metrics import BUILD_INFO
from arcana.services.app import Services


def create_app(services: Services | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the app over ``services``; the caller owns their lifecycle (``arcana.lifecycle``).
    Without services (the OpenAPI document, built from ``settings`` alone) only the routes
    that need none answer."""
    settings = services.settings if services is not None else (settings or get_settings())

    event_rate = admin_overview.EventRate()

    app = FastAPI(
        title="Arcana",
        version=__version__,
        description="Auth, product catalog, jobs, events and WebAssembly audit plugins.",
        # FastAPI's built-in OpenTelemetry is off: RequestContextMiddleware makes the one HTTP
        # span (route template, request id, incoming traceparent) through arcana.tracing, and
        # FastAPI's own log records would carry exception messages. Off, it also costs nothing
        # per request when tracing is off.
        telemetry={
            "tracing": False,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "auto_configure": False,
        },
    )
    app.state.event_rate = event_rate
    if services is not None:
        app.state.services = services
        services.commits.add(event_rate.record)
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(auth.LoginFastPath)  # inside the next three
    app.add_middleware(auth.MeFastPath)  # inside the next two
    app.add_middleware(products.ProductFastPaths)  # inside the next
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.http.max_body_bytes)
    app.include_router(ops.router)
    app.include_router(auth.router)
    app.include_router(products.router)
    app.include_router(admin_jobs.router)
    app.include_router(events.router)
    app.include_router(admin_plugins.router)
    app.include_router(admin_users.router)
    app.include_router(admin_overview.router)
    console.install(app)
    BUILD_INFO.labels(__version__).set(1)
    return app
