"""The HTTP server of ``arcana serve``: uvicorn or granian (``ARCANA_HTTP_SERVER``).

Both run the app in the serving process, on its (uvloop) event loop, beside the gRPC server
and the background runtime, so ``arcana.lifecycle`` orders start and stop the same way for
either. What each must do, and does here:

- listen on ``ARCANA_HTTP_HOST:ARCANA_HTTP_PORT``; a port already taken fails the start
  (no SO_REUSEPORT unless ``--workers`` asked for it, so a second process cannot silently
  share the port of the first);
- believe ``X-Forwarded-For`` / ``X-Forwarded-Proto`` only from ``ARCANA_FORWARDED_ALLOW_IPS``;
- no access log (the request metrics and spans of ``api/middleware.py`` cover it);
- on ``stop()``: close the listener, let requests in flight finish within
  ``ARCANA_SHUTDOWN_TIMEOUT``, then return from ``serve()``.

Signals are not theirs: ``cli/serve.py`` handles SIGTERM/SIGINT and calls ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from arcana.config import Settings

log = logging.getLogger("arcana.serve")

BACKLOG = 2048  # uvicorn's default, for both


class HttpServer(Protocol):
    async def serve(self) -> None: ...

    def stop(self, sig: int) -> None:
        """Stop taking requests and drain (``sig``: the signal that asked for it)."""


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """The HTTP listening socket, bound as uvicorn binds its own (SO_REUSEADDR). With
    ``reuse_port`` (one of several ``--workers`` processes) SO_REUSEPORT too: each process
    binds the same port and the kernel spreads new connections across them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def build(app: ASGIApp, settings: Settings, *, reuse_port: bool) -> HttpServer:
    if settings.http.server == "granian":
        return GranianServer(app, settings, reuse_port=reuse_port)
    return UvicornServer(app, settings, reuse_port=reuse_port)


class UvicornServer:
    def __init__(self, app: ASGIApp, settings: Settings, *, reuse_port: bool) -> None:
        import uvicorn

        config = uvicorn.Config(
            app,
            host=settings.http.host,
            port=settings.http.port,
            loop="none",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=int(settings.shutdown_timeout),
            server_header=False,
            proxy_headers=True,
            forwarded_allow_ips=settings.http.forwarded_allow_ips,
        )

        class _Server(uvicorn.Server):
            """uvicorn re-raises a captured SIGTERM once it has stopped, which would end the
            process before the gRPC server, background tasks and pools are closed. Signals are
            handled by ``serve()`` instead, so shutdown runs to the end and the process exits 0."""

            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        self._server = _Server(config)
        self._sockets = (
            [listening_socket(settings.http.host, settings.http.port, reuse_port=True)]
            if reuse_port
            else None
        )

    async def serve(self) -> None:
        await self._server.serve(sockets=self._sockets)

    def stop(self, sig: int) -> None:
        # A second SIGINT makes uvicorn stop waiting for the connections (force exit).
        self._server.handle_exit(sig, None)


class GranianServer:
    """granian's embedded server (``granian.server.embed``): its Rust HTTP workers hand each
    request to this process's event loop, where the app runs as under uvicorn.

    What uvicorn gave us and granian does not, added here: the proxy headers (uvicorn's own
    ``ProxyHeadersMiddleware``, the code uvicorn itself wraps the app in, so the trust rules
    of ``ARCANA_FORWARDED_ALLOW_IPS`` are the same to the letter), a bound on the graceful
    drain (granian waits for requests in flight without limit), and the listening socket
    bound by us (granian's own sets SO_REUSEPORT even for one process).
    """

    def __init__(self, app: ASGIApp, settings: Settings, *, reuse_port: bool) -> None:
        from granian._granian import SocketHolder
        from granian.constants import Interfaces
        from granian.server.embed import Server
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        sock = listening_socket(settings.http.host, settings.http.port, reuse_port=reuse_port)

        holder: Any = SocketHolder  # granian's stub leaves out its (fd, uds, backlog) form

        class _Embedded(Server):
            def _init_shared_socket(self) -> None:
                # granian's listener over our socket; it owns (and closes) the descriptor.
                # Pinned granian version: this replaces a private method of the embedded
                # server, and tests/e2e/test_serve_servers.py checks the port behaviour.
                self._ssp = None
                shared = holder(sock.detach(), False, BACKLOG)
                self._shd = shared
                self._sfd = shared.get_fd()

        self._timeout = settings.shutdown_timeout
        self._stopping = asyncio.Event()
        self._server = _Embedded(
            ProxyHeadersMiddleware(app, trusted_hosts=settings.http.forwarded_allow_ips),  # type: ignore[arg-type]
            address=settings.http.host,
            port=settings.http.port,
            interface=Interfaces.ASGI,
            backlog=BACKLOG,
            log_level=_granian_level(settings.observability.log_level),
            # granian's loggers go through ours (root), with no handlers of their own.
            log_dictconfig=_GRANIAN_LOGGING,
            log_access=False,
        )

    async def serve(self) -> None:
        serving = asyncio.ensure_future(self._server.serve())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if serving.done():
                serving.result()
                return
            try:
                await asyncio.wait_for(asyncio.shield(serving), self._timeout)
            except TimeoutError:
                log.warning(
                    "requests still in flight after the shutdown timeout; stopping anyway",
                    extra={"timeout": self._timeout},
                )
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serving
        finally:
            stopping.cancel()

    def stop(self, sig: int) -> None:
        self._stopping.set()
        self._server.stop()  # type: ignore[no-untyped-call]


_GRANIAN_LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {},
    "handlers": {},
    "loggers": {
        "_granian": {"handlers": [], "propagate": True},
        "granian.access": {"handlers": [], "propagate": True},
    },
}


def _granian_level(level: str) -> Any:
    from granian.log import LogLevels

    name = level.lower()
    return LogLevels(name) if name in LogLevels.__members__ else LogLevels.info
