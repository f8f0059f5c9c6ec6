"""What runs beside the HTTP server or in ``arcana worker``: job workers, scheduler, outbox
relay and event consumers. Each area registers its loops here with ``container.spawn``."""

from __future__ import annotations

from arcana.bootstrap import Container
from arcana.worker.audit import start_audit_plugins


async def start_background(container: Container) -> None:
    """Job workers, scheduler, relay and consumers (embedded mode, worker processes)."""


async def start_serve_extras(container: Container) -> None:
    """Things every API process runs (e.g. the outbox relay wake-up, the gRPC server)."""
    start_audit_plugins(container)


async def stop_serve_extras(container: Container) -> None:
    """Stop what ``start_serve_extras`` started."""
