"""What runs beside the HTTP server or in ``arcana worker``: job workers, scheduler, outbox
relay and event consumers. Each area registers its loops here with ``container.spawn``."""

from __future__ import annotations

from arcana.bootstrap import Container
from arcana.worker.audit import start_audit_plugins
from arcana.worker.events import start_consumers, start_relay, stop_streams
from arcana.worker.jobs import start_jobs


async def start_background(container: Container) -> None:
    """Job workers, scheduler, relay and consumers (embedded mode, worker processes)."""
    start_jobs(container)
    start_relay(container)
    start_consumers(container)
    start_metrics_sampler(container)


async def start_serve_extras(container: Container) -> None:
    """What every API process runs: its outbox relay and the audit plugins."""
    start_relay(container)
    start_audit_plugins(container)
    start_metrics_sampler(container)


def start_metrics_sampler(container: Container) -> None:
    """Queue, outbox, stream, pool and readiness gauges; once per process."""
    sampler = container.metrics_sampler
    if not sampler.started:
        sampler.started = True
        container.spawn("metrics.sampler", sampler.run)


async def stop_serve_extras(container: Container) -> None:
    """Stop what ``start_serve_extras`` started."""
    stop_streams(container)


def begin_shutdown(container: Container) -> None:
    """A stop signal arrived: end long-lived responses before the server drains connections."""
    stop_streams(container)
