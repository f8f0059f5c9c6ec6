"""The job worker: leases batches of jobs, runs up to ``concurrency`` handlers at once, keeps
their leases alive with heartbeats, acknowledges in batches, retries with backoff and drains
gracefully.

Delivery is at least once: a job is acknowledged only after its handler returned, so a worker
that dies mid-job leaves a lease that expires and the reaper (every worker runs one) queues the
job again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from arcana import tracing
from arcana.domain.jobs import Job, JobQueue, JobStatus, backoff_delay
from arcana.metrics import (
    JOBS_DEAD,
    JOBS_DEAD_LETTERED,
    JOBS_DEPTH,
    JOBS_DURATION,
    JOBS_FAILED,
    JOBS_LATENCY,
    JOBS_PROCESSED,
    JOBS_QUEUE_WAIT,
    JOBS_RETRIED,
    JOBS_RUNNING,
    JOBS_WAITING,
)
from arcana.worker.registry import HandlerRegistry, JobContext

log = logging.getLogger("arcana.worker")


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        registry: HandlerRegistry,
        *,
        concurrency: int = 32,
        batch_size: int = 32,
        lease_seconds: float = 30.0,
        reap_interval: float = 1.0,
        timeout: float = 300.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        shutdown_timeout: float = 10.0,
        worker_id: str | None = None,
        rand: Callable[[], float] = random.random,
        stats_interval: float = 5.0,
    ) -> None:
        self.queue = queue
        self.registry = registry
        self.concurrency = concurrency
        self.batch_size = batch_size
        # The stored deadline leaves room for one reaper pass, so a dead worker's job runs
        # again within ``lease_seconds``.
        self.lease = max(lease_seconds - reap_interval, lease_seconds / 2)
        self.heartbeat_every = self.lease / 3
        self.reap_interval = reap_interval
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.shutdown_timeout = shutdown_timeout
        self.worker_id = worker_id or new_worker_id()
        self.rand = rand
        self.stats_interval = stats_interval
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._acks: list[str] = []
        self._ack_event = asyncio.Event()
        self._slot = asyncio.Event()
        # Side loops end on this flag rather than on cancellation alone: a cancellation that
        # lands inside a client library call is not always propagated.
        self._closing = asyncio.Event()

    # -- main loop ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        aux = [
            asyncio.create_task(self._heartbeats(), name="jobs.heartbeat"),
            asyncio.create_task(self._reaper(), name="jobs.reaper"),
            asyncio.create_task(self._ack_flusher(), name="jobs.acks"),
        ]
        log.info("worker %s started (concurrency %d)", self.worker_id, self.concurrency)
        try:
            await self._fetch_loop(stop)
        finally:
            try:
                await self._drain()
            finally:
                self._closing.set()
                self._ack_event.set()
                _done, pending = await asyncio.wait(aux, timeout=5.0)
                for t in pending:
                    t.cancel()
                with contextlib.suppress(Exception):
                    await self._flush_acks()
            log.info("worker %s stopped", self.worker_id)

    async def _fetch_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            free = self.concurrency - len(self._inflight)
            if free <= 0:
                self._slot.clear()
                await _first(self._slot.wait(), stop)
                continue
            try:
                jobs = await self.queue.fetch(
                    self.worker_id, min(free, self.batch_size), self.lease
                )
            except Exception as exc:
                log.warning("fetch failed: %s", exc)
                await _first(asyncio.sleep(1.0), stop)
                continue
            if not jobs:
                # Returns within a second at most, so the stop event is seen soon enough;
                # not racing it against the stop event saves two tasks per idle wake-up.
                try:
                    await self.queue.wait_for_work(1.0)
                except Exception as exc:
                    log.warning("waiting for work failed: %s", exc)
                    await _first(asyncio.sleep(1.0), stop)
                continue
            for job in jobs:
                self._inflight[job.id] = asyncio.create_task(self._run(job))

    async def _run(self, job: Job) -> None:
        t0 = time.perf_counter()
        JOBS_RUNNING.inc()
        wait = 0.0
        if job.started_at is not None:
            wait = max((job.started_at - job.scheduled_at).total_seconds(), 0.0)
            JOBS_LATENCY.observe(wait)
            JOBS_QUEUE_WAIT.labels(job.job_type).observe(wait)
        try:
            if not tracing.ENABLED:
                await self._call_handler(job)
            elif (unsampled := tracing.enter_unsampled(job.trace_context)) is not None:
                # The enqueuer's trace is not sampled: it stays current (for the work and
                # the log lines of the handler), but no span is made.
                try:
                    await self._call_handler(job)
                finally:
                    tracing.leave_unsampled(unsampled)
            else:
                # The attempt as a span in the trace of whatever enqueued the job; its
                # attributes are built only if that trace is sampled.
                with tracing.span(
                    f"job.run {job.job_type}",
                    lambda: {
                        "arcana.job.type": job.job_type,
                        "arcana.job.id": job.id,
                        "arcana.job.attempt": job.attempt,
                        "arcana.job.priority": job.priority.name,
                        "arcana.job.queue_wait_seconds": wait,
                    },
                    kind="consumer",
                    parent=job.trace_context,
                ):
                    await self._call_handler(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                error = f"TimeoutError: handler ran longer than {self.timeout:g}s"
            else:
                error = f"{type(exc).__name__}: {exc}"
            await self._failed(job, error)
        else:
            JOBS_PROCESSED.labels(job.job_type).inc()
            self._acks.append(job.id)
            self._ack_event.set()
        finally:
            JOBS_DURATION.labels(job.job_type).observe(time.perf_counter() - t0)
            JOBS_RUNNING.dec()
            self._inflight.pop(job.id, None)
            self._slot.set()

    async def _call_handler(self, job: Job) -> None:
        handler = self.registry.resolve(job.job_type)
        if handler is None:
            raise LookupError(f"no handler registered for job type {job.job_type!r}")
        async with asyncio.timeout(self.timeout):
            await handler(JobContext(job, self.worker_id))

    async def _failed(self, job: Job, error: str) -> None:
        JOBS_FAILED.labels(job.job_type).inc()
        delay = backoff_delay(job.retry_count, self.backoff_base, self.backoff_cap, self.rand)
        try:
            status = await self.queue.fail(self.worker_id, job.id, error, delay)
        except Exception as exc:  # the lease will expire and the job run again
            log.warning("could not record the failure of job %s: %s", job.id, exc)
            return
        if status is JobStatus.RETRYING:
            JOBS_RETRIED.labels(job.job_type).inc()
            log.info("job %s (%s) failed, retry in %.2fs: %s", job.id, job.job_type, delay, error)
        elif status is JobStatus.DEAD:
            JOBS_DEAD_LETTERED.labels(job.job_type).inc()
            log.warning("job %s (%s) is dead: %s", job.id, job.job_type, error)

    # -- side loops -----------------------------------------------------------------------
    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def _heartbeats(self) -> None:
        while not self._closing.is_set():
            await self._pause(self.heartbeat_every)
            if self._closing.is_set():
                return
            if self._inflight:
                try:
                    await self.queue.heartbeat(self.worker_id, list(self._inflight), self.lease)
                except Exception as exc:
                    log.warning("heartbeat failed: %s", exc)

    async def _reaper(self) -> None:
        last_stats = 0.0
        while not self._closing.is_set():
            try:
                n = await self.queue.reap()
                if n:
                    log.warning("requeued %d job(s) whose worker stopped heartbeating", n)
                if time.monotonic() - last_stats >= self.stats_interval:
                    last_stats = time.monotonic()
                    stats = await self.queue.stats()
                    for name, depth in stats.depth.items():
                        JOBS_DEPTH.labels(name).set(depth)
                    JOBS_WAITING.labels("scheduled").set(stats.scheduled)
                    JOBS_WAITING.labels("retrying").set(stats.retrying)
                    JOBS_DEAD.set(stats.dead)
            except Exception as exc:
                log.warning("reaper pass failed: %s", exc)
            await self._pause(self.reap_interval)

    async def _ack_flusher(self) -> None:
        while not self._closing.is_set():
            await self._ack_event.wait()
            self._ack_event.clear()
            try:
                await self._flush_acks()
            except Exception as exc:
                log.warning("acknowledging jobs failed, retrying: %s", exc)
                await self._pause(0.5)
                self._ack_event.set()

    async def _flush_acks(self) -> None:
        while self._acks:
            ids, self._acks = self._acks, []
            try:
                await self.queue.complete(self.worker_id, ids)
            except BaseException:
                self._acks = ids + self._acks
                raise

    # -- shutdown -------------------------------------------------------------------------
    async def _drain(self) -> None:
        """Let running handlers finish within the shutdown timeout; give the rest back."""
        if not self._inflight:
            return
        tasks = dict(self._inflight)
        _done, pending = await asyncio.wait(tasks.values(), timeout=self.shutdown_timeout)
        if not pending:
            return
        ids = [job_id for job_id, t in tasks.items() if t in pending]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        try:
            n = await self.queue.release(self.worker_id, ids)
            log.warning("returned %d unfinished job(s) to the queue", n)
        except Exception as exc:
            log.warning("could not return %d job(s); their leases will expire: %s", len(ids), exc)


async def _first(awaitable: Coroutine[Any, Any, Any], stop: asyncio.Event) -> None:
    """Await ``awaitable`` or the stop event, whichever comes first."""
    if stop.is_set():
        awaitable.close()
        return
    task = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, stopper):
            if not t.done():
                t.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)
