"""The life of one process, in the one order every entry point follows:

1. **build**: ``Lifecycle.build(settings, overrides)`` wires every area
   (``bootstrap.build_app``). Nothing connects yet.
2. **start**: ``start()`` migrates embedded SQLite and loads the Redis scripts; then the
   process starts the loops of its role: ``start_api_loops()`` (every API process: outbox
   relay, audit plugins, plugin reloads, metrics) and/or ``start_worker_loops()`` (job worker,
   scheduler, relay, event consumers, metrics). Each loop runs once per process under the
   ``Runtime``, which restarts a loop that crashes.
3. **ready**: ``ready()`` (``/readyz``, gRPC health, the ``arcana_ready`` gauge) pings the
   database and Redis through the health service.
4. **drain**: ``drain()`` when a stop signal arrives: live event streams (SSE) end, so the
   servers can stop taking requests and finish the ones in flight within
   ``ARCANA_SHUTDOWN_TIMEOUT``.
5. **stop**: ``stop()`` gives every loop the stop event and ``ARCANA_SHUTDOWN_TIMEOUT`` to
   return (then cancels it), then closes the hashing pool, the product cache, the queue, the
   database engine and Redis.
"""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from arcana.bootstrap import (
    App,
    Overrides,
    build_app,
    close_resources,
    open_resources,
    partition_layouts,
)
from arcana.config import Settings
from arcana.domain.events import DomainEvent
from arcana.runtime import Runtime
from arcana.worker.jobs import job_loops

log = logging.getLogger(__name__)


class Lifecycle:
    def __init__(self, app: App) -> None:
        self.app = app
        self.runtime = Runtime(app.settings.shutdown_timeout)

    @classmethod
    def build(cls, settings: Settings, overrides: Overrides | None = None) -> Lifecycle:
        return cls(build_app(settings, overrides))

    @classmethod
    @asynccontextmanager
    async def running(
        cls,
        settings: Settings,
        overrides: Overrides | None = None,
        *,
        migrate_embedded: bool = True,
    ) -> AsyncIterator[Lifecycle]:
        """Build and start; stop on the way out (also when start-up fails)."""
        process = cls.build(settings, overrides)
        try:
            await process.start(migrate_embedded=migrate_embedded)
            yield process
        finally:
            await process.stop()

    # -- start ------------------------------------------------------------------------------
    async def start(self, *, migrate_embedded: bool = True, enforce_layouts: bool = False) -> None:
        """``enforce_layouts`` for the processes that run the queue and the event stream
        (``open_resources``): they are recorded as running with their partition counts while
        they run (``keep_present``)."""
        member = None
        if enforce_layouts and self.app.redis is not None:
            from arcana.adapters.partition_layout import keep_present, process_name

            member = process_name()
        await open_resources(self.app, migrate_embedded=migrate_embedded, layout_member=member)
        if member is not None and self.app.redis is not None:
            for layout, partitions in partition_layouts(self.app):
                self.runtime.spawn(
                    f"layout-presence.{layout.name}",
                    functools.partial(keep_present, self.app.redis, layout, partitions, member),
                )

    def start_api_loops(self) -> None:
        """What every API process runs beside HTTP and gRPC."""
        self.start_relay()
        self.start_audit_plugins()
        self.start_metrics_sampler()

    def start_worker_loops(self) -> None:
        """What ``arcana worker`` runs, and ``arcana serve`` in embedded mode or with
        ``--with-worker``."""
        for name, loop in job_loops(self.app).items():
            self.runtime.spawn(name, loop)
        self.start_relay()
        self.start_consumers()
        self.start_metrics_sampler()

    def start_relay(self) -> None:
        """This process's outbox relay, woken by every commit of this process (so these
        commits need not notify other processes: ``Database.notifies_outbox``)."""
        relay = self.app.events.relay
        if self.runtime.spawn("outbox-relay", relay.run):

            def wake(_events: list[DomainEvent]) -> None:
                relay.wake()

            self.app.commits.add(wake)
            self.app.db.local_relay = True

    def start_audit_plugins(self) -> None:
        """Load the plugins, run them on emitted audit events, follow reloads made elsewhere."""
        plugins = self.app.plugins_area
        self.runtime.spawn("audit-plugins", plugins.sink.run)
        self.runtime.spawn("plugin-reload-follower", plugins.plugins.follow_reloads)

    def start_consumers(self, count: int = 1) -> None:
        """Members of consumer group ``arcana`` (Redis mode). Embedded mode needs none: the
        relay dispatches to the handlers itself."""
        bus = self.app.events
        if bus.embedded:
            return
        for i in range(count):
            self.runtime.spawn(f"event-consumer-{i}", bus.consumer().run)
        log.info("event consumers started", extra={"count": count, "stream": bus.stream})

    def start_metrics_sampler(self) -> None:
        """Queue, outbox, stream, pool and readiness gauges."""
        self.runtime.spawn("metrics.sampler", self.app.metrics_sampler.run)

    @staticmethod
    def freeze_start_up_objects() -> None:
        """Take what start-up allocated (modules, the app, pools, compiled statements, loaded
        plugins) out of the cyclic garbage collector's reach (``gc.freeze``), once the process
        is about to serve. Why: each full collection otherwise walks all of it on the event
        loop; on PostgreSQL those pauses made the cached read's p99 at 64 connections
        100 to 130 ms, against 9 to 13 ms with the collector off (``bench/RESULTS.md``). What is
        allocated afterwards is collected as usual."""
        gc.collect()
        gc.freeze()

    # -- ready, drain, stop -----------------------------------------------------------------
    async def ready(self) -> dict[str, Any]:
        return dict(await self.app.health.ready())

    def drain(self) -> None:
        """A stop signal arrived: end long-lived responses before the servers drain."""
        self.app.events.close_streams()

    async def stop(self) -> None:
        self.drain()
        # What commits while the relay stops wakes another process's relay.
        self.app.db.local_relay = False
        await self.runtime.stop()
        await close_resources(self.app)
