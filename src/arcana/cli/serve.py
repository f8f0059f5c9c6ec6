"""``arcana serve``: HTTP (uvicorn) and gRPC in one process, plus the background runtime in
embedded mode (or with ``--with-worker``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import typer
import uvicorn

from arcana import tracing
from arcana.api.app import create_app
from arcana.bootstrap import Container
from arcana.cli.console import fail, load_settings
from arcana.config import Settings
from arcana.log import configure_logging
from arcana.rpc.server import GrpcServer, start_grpc
from arcana.worker import runtime

log = logging.getLogger("arcana.serve")


class _Server(uvicorn.Server):
    """uvicorn re-raises a captured SIGTERM once it has stopped, which would end the process
    before the gRPC server, background tasks and pools are closed. Signals are handled by
    ``serve()`` instead, so shutdown runs to the end and the process exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(settings: Settings, *, with_worker: bool) -> None:
    container = Container.from_settings(settings)
    try:
        await container.start()
    except Exception as exc:
        await container.close()
        raise fail(f"start-up failed: {exc}") from None
    app = create_app(container)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        loop="none",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_timeout),
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()

    def on_signal(sig: int) -> None:
        runtime.begin_shutdown(container)
        server.handle_exit(sig, None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    run_background = settings.embedded or with_worker
    grpc_server: GrpcServer | None = None
    try:
        grpc_server = await start_grpc(container)
    except Exception as exc:
        await container.close()
        raise fail(f"gRPC start-up failed: {exc}") from None
    try:
        await runtime.start_serve_extras(container)
        if run_background:
            await runtime.start_background(container)
        log.info(
            "arcana serving",
            extra={
                "http": f"{settings.http_host}:{settings.http_port}",
                "embedded": settings.embedded,
            },
        )
        await server.serve()
    finally:
        if grpc_server is not None:
            await grpc_server.stop(settings.shutdown_timeout)
        await runtime.stop_serve_extras(container)
        await container.close()


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        host: str = typer.Option(
            None, help="HTTP bind address [env ARCANA_HTTP_HOST, default 127.0.0.1]"
        ),
        port: int = typer.Option(None, help="HTTP port [env ARCANA_HTTP_PORT, default 8000]"),
        grpc_port: int = typer.Option(
            None, help="gRPC port, 0 disables [env ARCANA_GRPC_PORT, default 50051]"
        ),
        with_worker: bool = typer.Option(
            False,
            "--with-worker",
            help="With Redis configured, also run job workers, scheduler and consumers.",
        ),
    ) -> None:
        """Run the HTTP API and gRPC server. Without ARCANA_REDIS_URL (embedded mode) the job
        workers, scheduler and event consumers run in this process too."""
        settings = load_settings()
        updates = {
            k: v
            for k, v in {"http_host": host, "http_port": port, "grpc_port": grpc_port}.items()
            if v is not None
        }
        if updates:
            settings = settings.model_copy(update=updates)
        configure_logging(settings.log_level, json=settings.log_json, env=settings.env)
        tracing.configure_tracing(settings.otel_endpoint, service_name="arcana")
        try:
            import uvloop

            uvloop.run(serve(settings, with_worker=with_worker))
        except ImportError:  # pragma: no cover - uvloop is a pinned dependency on Linux
            asyncio.run(serve(settings, with_worker=with_worker))
        except KeyboardInterrupt:
            pass
        finally:
            tracing.shutdown_tracing()
