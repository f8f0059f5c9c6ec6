"""The ``grpc.aio`` server: product service, health, reflection; unary calls instrumented
(``rpc/interceptors.py``).

Started by ``arcana serve`` beside HTTP on ``ARCANA_GRPC_PORT`` (0 disables), sharing the
process.s services (``Services``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from arcana.rpc.gen.arcana.product.v1 import product_pb2 as pb
from arcana.rpc.interceptors import Instrumented
from arcana.rpc.products import ADMIN_METHODS, ProductServicer, add_product_service
from arcana.services.app import Services

log = logging.getLogger("arcana.rpc")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ProductService"].full_name
HEALTH_INTERVAL = 2.0


class GrpcServer:
    """Owns the ``grpc.aio.Server`` and the health loop; ``port`` is the bound port."""

    def __init__(
        self, services: Services, host: str, port: int, *, reuse_port: bool = False
    ) -> None:
        self.services = services
        settings = services.settings
        options = [
            ("grpc.max_receive_message_length", settings.grpc.max_message_bytes),
            ("grpc.max_send_message_length", settings.grpc.max_message_bytes),
            # Shared only by the processes of ``arcana serve --workers N``.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ]
        # No grpc.aio interceptors: they cost awaits on every call just to find the handler.
        # Metrics, request ids, deadlines, errors and auth are built into each unary handler
        # at registration instead; reflection (streaming) is registered as it is.
        self.server = grpc.aio.server(options=options)
        instrumented = Instrumented(self.server, services.identity, ADMIN_METHODS)
        add_product_service(ProductServicer(services), instrumented)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, instrumented)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), instrumented
        )
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot bind gRPC to {host}:{port}")
        self._health_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def _set_health(self) -> None:
        ok = await self.services.health.check("database")
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ok
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set("", status)
        await self.health.set(SERVICE_NAME, status)

    async def _health_loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self._set_health()
            except Exception:
                log.exception("gRPC health check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), HEALTH_INTERVAL)

    async def start(self) -> None:
        await self._set_health()
        await self.server.start()
        self._health_task = asyncio.create_task(self._health_loop(), name="grpc-health")
        log.info("gRPC serving", extra={"grpc_port": self.port})

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight calls finish within ``grace`` seconds."""
        self._stop.set()
        if self._health_task is not None:
            await self._health_task
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_grpc(services: Services, *, reuse_port: bool = False) -> GrpcServer | None:
    settings = services.settings
    if settings.grpc.port == 0:
        return None
    server = GrpcServer(services, settings.grpc.host, settings.grpc.port, reuse_port=reuse_port)
    await server.start()
    return server
