"""Gauges that need a look at shared state (queue, outbox, stream, pool, readiness), sampled
every ``ARCANA_METRICS_SAMPLE_SECONDS`` by each API and worker process.

Each pass costs a handful of cheap reads: the queue's counters, one outbox query on its
partial index, ``XINFO GROUPS`` and a few band heads of the Redis queue. Sampling on a timer
instead of on every scrape keeps a scrape storm (several Prometheus replicas, a dashboard
left open) from turning into database load. Several processes report the same shared values:
aggregate with ``max`` in queries (see deploy/prometheus/alerts.yml).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from arcana.adapters.database import Database
from arcana.adapters.events.outbox import backlog
from arcana.domain.jobs import JobQueue
from arcana.domain.timestamps import utcnow
from arcana.metrics import (
    DB_POOL_IN_USE,
    DB_POOL_WAITING,
    EVENTS_STREAM_LAG,
    EVENTS_STREAM_PENDING,
    JOBS_OLDEST_QUEUED_AGE,
    JOBS_QUEUE_JOBS,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
    READY,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)


def _age(then: datetime | None, now: datetime) -> float:
    if then is None:
        return 0.0
    if then.tzinfo is None:  # SQLite hands back naive UTC
        then = then.replace(tzinfo=UTC)
    return max((now - then).total_seconds(), 0.0)


class MetricsSampler:
    def __init__(
        self,
        db: Database,
        queue: JobQueue,
        redis: Redis | None,
        stream: str,
        ready: Callable[[], Awaitable[dict[str, Any]]],
        interval: float,
    ) -> None:
        self._db = db
        self._queue = queue
        self._redis = redis
        self._stream = stream
        self._ready = ready
        self.interval = interval

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def sample(self) -> None:
        """One pass; each part fails on its own (an outage leaves the last values)."""
        for part in (self._jobs, self._outbox, self._stream_groups, self._readiness):
            try:
                await part()
            except Exception as exc:
                log.debug("metrics sample %s failed: %r", part.__name__, exc)
        self._pool()

    async def _jobs(self) -> None:
        queue = self._queue
        stats = await queue.stats()
        for priority, depth in stats.depth.items():
            JOBS_QUEUE_JOBS.labels("queued", priority).set(depth)
        for status in ("scheduled", "retrying", "running", "dead"):
            JOBS_QUEUE_JOBS.labels(status, "all").set(getattr(stats, status))
        oldest = getattr(queue, "oldest_ready_at", None)
        if oldest is not None:
            JOBS_OLDEST_QUEUED_AGE.set(_age(await oldest(), utcnow()))

    async def _outbox(self) -> None:
        rows, oldest = await backlog(self._db)
        OUTBOX_BACKLOG.set(rows)
        OUTBOX_OLDEST_AGE.set(_age(oldest, utcnow()))

    async def _stream_groups(self) -> None:
        if self._redis is None:
            return
        try:
            groups = await self._redis.xinfo_groups(self._stream)
        except Exception as exc:  # no stream yet: nothing to report
            if "no such key" in str(exc).lower():
                return
            raise
        for g in groups:
            name = g["name"].decode() if isinstance(g["name"], bytes) else str(g["name"])
            EVENTS_STREAM_PENDING.labels(name).set(int(g.get("pending") or 0))
            lag = g.get("lag")
            if lag is not None:  # Redis < 7 does not report it
                EVENTS_STREAM_LAG.labels(name).set(int(lag))

    async def _readiness(self) -> None:
        checks = await self._ready()
        READY.set(1 if all(bool(v) for v in checks.values()) else 0)

    def _pool(self) -> None:
        pool: Any = self._db.engine.sync_engine.pool
        checkedout = getattr(pool, "checkedout", None)
        if checkedout is None:  # SQLite's pool keeps no count
            return
        DB_POOL_IN_USE.set(int(checkedout()))
        # Tasks blocked in ``pool.connect()``: the fair queue counts them (``fair_pool``);
        # report 0 for any other pool.
        DB_POOL_WAITING.set(int(getattr(getattr(pool, "_pool", None), "waiting", 0)))
