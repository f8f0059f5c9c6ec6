"""``arcana serve``: HTTP (uvicorn or granian, see ``cli/http_server.py``) and gRPC in one
process, plus the background runtime in embedded mode (or with ``--with-worker``)."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import typer

from arcana import tracing
from arcana.cli.console import fail, load_settings

if TYPE_CHECKING:
    from arcana.config import Settings
    from arcana.rpc.server import GrpcServer

log = logging.getLogger("arcana.serve")


class ServerName(enum.StrEnum):
    """``--server``: the HTTP server (``ARCANA_HTTP_SERVER``)."""

    uvicorn = "uvicorn"
    granian = "granian"


async def serve(settings: Settings, *, with_worker: bool, reuse_port: bool = False) -> None:
    """The lifecycle of ``arcana.lifecycle`` around the HTTP server and gRPC: build, start
    (the API loops, and the worker loops in embedded mode or with ``--with-worker``), serve
    until a signal, drain, stop."""
    # Imported here, not at module level: ``arcana --help`` and the other commands must not
    # pay for uvicorn, granian, FastAPI, grpc and the composition root.
    from arcana.api.app import create_app
    from arcana.cli import http_server
    from arcana.lifecycle import Lifecycle
    from arcana.rpc.server import start_grpc

    process = Lifecycle.build(settings)
    try:
        await process.start(enforce_layouts=True)
    except Exception as exc:
        await process.stop()
        raise fail(f"start-up failed: {exc}") from None
    try:
        server = http_server.build(create_app(process.app), settings, reuse_port=reuse_port)
    except OSError as exc:
        await process.stop()
        raise fail(
            f"HTTP server cannot listen on {settings.http.host}:{settings.http.port}: {exc}"
        ) from None
    loop = asyncio.get_running_loop()

    def on_signal(sig: int) -> None:
        process.drain()
        server.stop(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    run_background = settings.embedded or with_worker
    grpc_server: GrpcServer | None = None
    try:
        grpc_server = await start_grpc(process.app, reuse_port=reuse_port)
    except Exception as exc:
        await process.stop()
        raise fail(f"gRPC start-up failed: {exc}") from None
    try:
        process.start_api_loops()
        if run_background:
            process.start_worker_loops()
        process.freeze_start_up_objects()
        log.info(
            "arcana serving",
            extra={
                "http": f"{settings.http.host}:{settings.http.port}",
                "embedded": settings.embedded,
                "server": settings.http.server,
            },
        )
        await server.serve()
    finally:
        if grpc_server is not None:
            await grpc_server.stop(settings.shutdown_timeout)
        await process.stop()


def supervise(workers: int, child_args: list[str]) -> int:
    """``arcana serve --workers N``: N copies of ``arcana serve`` sharing the HTTP and gRPC
    ports (SO_REUSEPORT). Each runs its own services, outbox relay and audit plugins, as
    separately started API processes do. SIGTERM/SIGINT go to every child; when one exits on
    its own, the others are stopped too and the exit code is passed on (a process manager
    restarts the whole set)."""
    cmd = [sys.executable, "-c", "from arcana.cli import main; main()", "serve", *child_args]
    children = [subprocess.Popen(cmd) for _ in range(workers)]
    stopping = False

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    try:
        while True:
            exited = [c for c in children if c.poll() is not None]
            if exited:
                code = next((c.returncode for c in exited if c.returncode), 0)
                if not stopping:
                    log.error("a serve process exited with %s; stopping the others", code)
                    forward(signal.SIGTERM, None)
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                children[0].wait(0.5)
    finally:
        for child in children:
            child.wait()
    return code


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
        workers: int = typer.Option(
            1,
            "--workers",
            min=1,
            help="Processes sharing the HTTP and gRPC ports (SO_REUSEPORT); needs Redis.",
        ),
        server: ServerName = typer.Option(
            None,
            "--server",
            help="HTTP server: uvicorn or granian [env ARCANA_HTTP_SERVER, default uvicorn]",
        ),
        reuse_port: bool = typer.Option(False, "--reuse-port", hidden=True),
    ) -> None:
        """Run the HTTP API and gRPC server. Without ARCANA_REDIS_URL (embedded mode) the job
        workers, scheduler and event consumers run in this process too."""
        settings = load_settings()
        updates = {
            k: v
            for k, v in {
                "http_host": host,
                "http_port": port,
                "grpc_port": grpc_port,
                "http_server": server.value if server is not None else None,
            }.items()
            if v is not None
        }
        if updates:
            settings = settings.replace(**updates)
        if workers > 1:
            if settings.embedded:
                raise fail(
                    "--workers needs ARCANA_REDIS_URL: in embedded mode the cache and the "
                    "event dispatch live in one process"
                )
            if settings.http.port == 0:
                raise fail("--workers needs a fixed HTTP port (not 0)")
            child_args = ["--reuse-port", "--host", settings.http.host]
            child_args += ["--port", str(settings.http.port)]
            child_args += ["--grpc-port", str(settings.grpc.port)]
            child_args += ["--server", settings.http.server]
            if with_worker:
                child_args.append("--with-worker")
            raise typer.Exit(supervise(workers, child_args))
        from arcana.config import reveal
        from arcana.log import configure_logging

        configure_logging(
            settings.observability.log_level, json=settings.observability.log_json, env=settings.env
        )
        tracing.configure_tracing(
            reveal(settings.observability.otel_endpoint), service_name="arcana"
        )
        try:
            import uvloop

            uvloop.run(serve(settings, with_worker=with_worker, reuse_port=reuse_port))
        except ImportError:  # pragma: no cover - uvloop is a pinned dependency on Linux
            asyncio.run(serve(settings, with_worker=with_worker, reuse_port=reuse_port))
        except KeyboardInterrupt:
            pass
        finally:
            tracing.shutdown_tracing()
