"""``arcana worker``: job workers, scheduler and event consumers until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

import typer

from arcana import tracing
from arcana.cli.console import fail, load_settings

if TYPE_CHECKING:
    from arcana.config import Settings

log = logging.getLogger("arcana.worker")


def serve_metrics(host: str, port: int) -> int:
    """``/metrics`` from a worker process (a thread of prometheus_client); returns the port."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)


async def run_worker(settings: Settings, metrics_port: int | None = None) -> None:
    if metrics_port is not None:
        try:
            port = serve_metrics(settings.http.host, metrics_port)
        except OSError as exc:
            raise fail(f"cannot serve metrics on port {metrics_port}: {exc}") from None
        log.info("metrics on http://%s:%d/metrics", settings.http.host, port)
    alive_file = settings.jobs.worker_alive_file
    if alive_file is not None:
        from arcana.worker.alive_file import touch

        try:  # before anything starts: a path the probe can never see is a configuration error
            touch(alive_file)
        except OSError as exc:
            raise fail(f"cannot write ARCANA_WORKER_ALIVE_FILE {alive_file}: {exc}") from None
    from arcana.lifecycle import Lifecycle

    process = Lifecycle.build(settings)
    try:
        await process.start(enforce_layouts=True)
    except Exception as exc:
        await process.stop()
        if alive_file is not None:
            alive_file.unlink(missing_ok=True)
        raise fail(f"start-up failed: {exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopped = asyncio.Event()
    alive: asyncio.Task[None] | None = None
    if alive_file is not None:
        from arcana.worker.alive_file import keep_alive

        # Touched until the process has stopped, so the probe does not kill a draining worker.
        alive = asyncio.create_task(keep_alive(alive_file, stopped), name="worker.alive_file")
    try:
        process.start_worker_loops()
        process.freeze_start_up_objects()
        log.info(
            "arcana worker running",
            extra={
                "concurrency": settings.jobs.worker_concurrency,
                "queue": settings.effective_queue_backend,
            },
        )
        await stop.wait()
        log.info("arcana worker stopping")
    finally:
        try:
            await process.stop()
        finally:
            stopped.set()
            if alive is not None:
                await alive


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker_cmd(
        concurrency: int = typer.Option(
            None,
            "--concurrency",
            "-c",
            min=1,
            help="Jobs run at once [env ARCANA_WORKER_CONCURRENCY, default 32]",
        ),
        metrics_port: int = typer.Option(
            None,
            "--metrics-port",
            min=0,
            max=65535,
            help="Serve Prometheus /metrics on this port (bound to ARCANA_HTTP_HOST)",
        ),
    ) -> None:
        """Run job workers, the periodic scheduler and event consumers until SIGTERM."""
        settings = load_settings()
        if concurrency is not None:
            settings = settings.replace(worker_concurrency=concurrency)
        from arcana.config import reveal
        from arcana.log import configure_logging

        configure_logging(
            settings.observability.log_level, json=settings.observability.log_json, env=settings.env
        )
        tracing.configure_tracing(
            reveal(settings.observability.otel_endpoint), service_name="arcana-worker"
        )
        try:
            import uvloop

            uvloop.run(run_worker(settings, metrics_port))
        except ImportError:  # pragma: no cover - uvloop is a pinned dependency on Linux
            asyncio.run(run_worker(settings, metrics_port))
        except KeyboardInterrupt:
            pass
        finally:
            tracing.shutdown_tracing()
