"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
from arcana.bootstrap import Container
from arcana.config import Settings, get_settings
from arcana.metrics import BUILD_INFO

API_PREFIX = "/api/v1"


def create_app(container: Container | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the app. Given a container, the caller owns its life cycle; otherwise the app
    builds one from ``settings`` on start-up and closes it on shutdown."""
    settings = container.settings if container is not None else (settings or get_settings())

    event_rate = admin_overview.EventRate()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if container is not None:
            app.state.container = container
            yield
            return
        owned = Container.from_settings(settings)
        owned.on_commit(event_rate.record)
        await owned.start()
        app.state.container = owned
        try:
            yield
        finally:
            await owned.close()

    app = FastAPI(
        title="Arcana",
        version=__version__,
        description="Auth, product catalog, jobs, events and WebAssembly audit plugins.",
        lifespan=lifespan,
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
    if container is not None:
        app.state.container = container
        container.on_commit(event_rate.record)
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(products.CachedProductFastPath, prefix=API_PREFIX)  # inside the next
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.http.max_body_bytes)
    app.include_router(ops.router)
    app.include_router(auth.router)
    app.include_router(products.router, prefix=API_PREFIX)
    app.include_router(admin_jobs.router)
    app.include_router(events.router, prefix=API_PREFIX)
    app.include_router(admin_plugins.router)
    app.include_router(admin_users.router)
    app.include_router(admin_overview.router)
    console.install(app)
    BUILD_INFO.labels(__version__).set(1)
    return app
