"""The outbox relay: delivers committed outbox rows, oldest first, then marks them published.

Events go to a ``Publisher`` (the Redis stream + pub/sub, or in-process handlers in embedded
mode); job requests go to the job queue with the outbox row id as job id, so a row delivered
twice still makes one job. Publish-then-mark gives at-least-once delivery.

The relay sleeps until woken: by a commit in this process (``wake``), by a PostgreSQL
``NOTIFY arcana_outbox`` from a commit in a process without a relay of its own
(``Database.notifies_outbox``), or by a slow fallback poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from datetime import UTC
from typing import Any, Protocol

import asyncpg
from sqlalchemy.engine import make_url

from arcana import tracing
from arcana.adapters.database import Database, is_connectivity_error
from arcana.adapters.events.outbox import OutboxRow, SqlOutbox
from arcana.adapters.outbox_rows import NOTIFY_CHANNEL
from arcana.domain.delivery import JobEnqueuer
from arcana.domain.jobs import JobRequest
from arcana.domain.timestamps import utcnow
from arcana.errors import ServiceUnavailable
from arcana.metrics import (
    EVENTS_DEAD,
    OUTBOX_COMMIT_TO_PUBLISH,
    OUTBOX_RELAY_ERRORS,
    OUTBOX_RELAYED,
)

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """``done`` rows of the batch were delivered before ``__cause__`` stopped the rest."""

    def __init__(self, done: int) -> None:
        super().__init__(f"delivery stopped after {done} rows")
        self.done = done


class Publisher(Protocol):
    async def publish(self, rows: Sequence[OutboxRow]) -> None:
        """Deliver event rows in order; raise ``DeliveryError`` naming how many went out."""
        ...


def is_transient(exc: BaseException) -> bool:
    """Outages are retried forever; anything else counts towards ``max_attempts``.

    redis-py's errors are looked up among the loaded modules rather than imported: a process
    without Redis never loads redis-py (``bootstrap.py``), and an error of redis-py's can only
    have been raised once it is loaded."""
    if isinstance(exc, ServiceUnavailable):
        return True
    redis_errors = sys.modules.get("redis.exceptions")
    if redis_errors is not None and isinstance(
        exc, redis_errors.ConnectionError | redis_errors.TimeoutError
    ):
        return True
    return is_connectivity_error(exc)


async def wait_any(events: Sequence[asyncio.Event], timeout: float | None) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        publisher: Publisher,
        jobs: JobEnqueuer | None,
        *,
        batch_size: int = 200,
        poll_interval: float = 2.0,
        max_attempts: int = 5,
        backoff_cap: float = 5.0,
    ) -> None:
        self._db = db
        self._outbox = SqlOutbox(db)
        self._publisher = publisher
        self._jobs = jobs
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._max_attempts = max_attempts
        self._backoff_cap = backoff_cap
        self._wake = asyncio.Event()
        self.published = 0
        self.failures = 0
        """Rows this relay delivered (events and jobs), for tests and benchmarks."""

    def wake(self) -> None:
        self._wake.set()

    async def pending(self) -> int:
        return await self._outbox.pending()

    # -- one pass ---------------------------------------------------------------------------
    async def drain(self) -> bool:
        """Deliver until the outbox is empty. False when another relay holds the outbox."""
        while True:
            delivered, full, error = await self._drain_batch()
            if delivered is None:
                return False
            if error is not None:
                raise error
            if not full:
                return True

    async def _drain_batch(self) -> tuple[int | None, bool, BaseException | None]:
        jobs = self._jobs
        error: BaseException | None = None
        async with self._outbox.claim(self._batch_size, with_jobs=jobs is not None) as batch:
            if batch is None:
                return None, False, None
            if not batch.rows:
                return 0, False, None
            done, failed, dropped = 0, None, False
            try:
                # One span per batch, linked to the traces of its rows; each row's own work
                # (publish, dispatch, enqueue) continues that row's trace.
                with tracing.span(
                    "outbox.relay",
                    {"arcana.outbox.rows": len(batch.rows)},
                    links=[r.trace_context for r in batch.rows] if tracing.ENABLED else (),
                ):
                    done = await self._deliver(batch.rows, jobs)
            except DeliveryError as exc:
                done, error = exc.done, exc.__cause__ or exc
                row = batch.rows[done]
                failed = row.seq
                if not is_transient(error) and row.attempts + 1 >= self._max_attempts:
                    # A poison row must not block the outbox for ever.
                    log.error(
                        "outbox row %s (%s %s) dropped after %d attempts: %r",
                        row.id,
                        row.kind,
                        row.event_type,
                        row.attempts + 1,
                        error,
                    )
                    EVENTS_DEAD.labels("relay").inc()
                    done, failed, dropped, error = done + 1, None, True, None
            await batch.settle([r.seq for r in batch.rows[:done]], failed)
        self._count(batch.rows[:done])
        return done, dropped or len(batch.rows) == self._batch_size, error

    async def _deliver(self, rows: list[OutboxRow], jobs: JobEnqueuer | None) -> int:
        """Events in runs through the publisher, jobs one by one, all in ``seq`` order."""
        done = 0
        i = 0
        while i < len(rows):
            if rows[i].kind == "job":
                try:
                    assert jobs is not None
                    row = rows[i]
                    with tracing.span(
                        f"outbox.enqueue {row.event_type}",
                        {"arcana.job.type": row.event_type, "arcana.job.id": row.id},
                        kind="producer",
                        parent=row.trace_context,
                    ):
                        await jobs.enqueue(JobRequest.from_dict(row.data), job_id=row.id)
                except Exception as exc:
                    raise DeliveryError(done) from exc
                i += 1
                done += 1
                continue
            j = i
            while j < len(rows) and rows[j].kind != "job":
                j += 1
            try:
                await self._publisher.publish(rows[i:j])
            except DeliveryError as exc:
                raise DeliveryError(done + exc.done) from (exc.__cause__ or exc)
            except Exception as exc:
                raise DeliveryError(done) from exc
            done += j - i
            i = j
        return done

    def _count(self, rows: Sequence[OutboxRow]) -> None:
        now = utcnow()
        self.published += len(rows)
        for row in rows:
            OUTBOX_RELAYED.labels(row.kind).inc()
            created = row.created_at
            if created.tzinfo is None:  # SQLite hands back naive UTC
                created = created.replace(tzinfo=UTC)
            OUTBOX_COMMIT_TO_PUBLISH.observe(max((now - created).total_seconds(), 0.0))

    # -- the loop ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        listener = None
        if not self._db.is_sqlite:
            listener = asyncio.create_task(self._listen(stop), name="outbox-listen")
        delay = 0.05
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    drained = await self.drain()
                except Exception as exc:
                    OUTBOX_RELAY_ERRORS.inc()
                    self.failures += 1
                    log.warning("outbox relay: delivery failed, retrying in %.2fs: %r", delay, exc)
                    await wait_any([stop], delay)
                    delay = min(delay * 2, self._backoff_cap)
                    continue
                delay = 0.05
                # Another relay is draining: look again shortly in case it just finished.
                await wait_any([self._wake, stop], self._poll_interval if drained else 0.05)
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener

    async def _listen(self, stop: asyncio.Event) -> None:
        """LISTEN for commits of other processes; reconnects until stopped."""
        url = make_url(self._db.direct_url).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        delay = 0.5
        while not stop.is_set():
            conn: Any = None
            try:
                conn = await asyncpg.connect(dsn, timeout=5)
                await conn.add_listener(NOTIFY_CHANNEL, lambda *_a: self._wake.set())
                delay = 0.5
                self._wake.set()  # anything committed while we were not listening
                while not stop.is_set() and not conn.is_closed():
                    await wait_any([stop], 5.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox LISTEN connection failed: %r", exc)
                await wait_any([stop], delay)
                delay = min(delay * 2, 10.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=2))
