"""Periodic jobs. Every worker process may run the scheduler: each period's job gets a job id
derived from (type, period start), and the queue enqueues a given id at most once, so however
many schedulers run, each period is enqueued exactly once.

That holds while the period's job record exists, i.e. with ``ARCANA_JOB_FINISHED_TTL`` at least
as long as the longest period (the default, one day, is).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from arcana.config import Settings
from arcana.domain.jobs import DEFAULT_PRIORITIES, JobQueue, JobRequest, Priority
from arcana.services.jobs import periodic_schedule

log = logging.getLogger("arcana.scheduler")

_NAMESPACE = uuid.UUID("6f1c2a52-6a8e-4d7e-9a53-3f0c1d0e7a11")


@dataclass(frozen=True, slots=True)
class Periodic:
    job_type: str
    every_seconds: int
    max_retries: int = 3


def default_schedule(settings: Settings) -> list[Periodic]:
    """The periodic types of the catalogue, each with the period its setting gives."""
    return [Periodic(name, every) for name, every in periodic_schedule(settings.jobs).items()]


def period_job_id(job_type: str, period_start: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{job_type}@{period_start}"))


async def run_scheduler(
    queue: JobQueue,
    schedule: list[Periodic],
    stop: asyncio.Event,
    *,
    clock: Callable[[], float] = time.time,
    max_wait: float = 1.0,
) -> None:
    if not schedule:
        return
    done: dict[str, int] = {}
    while not stop.is_set():
        now = clock()
        for p in schedule:
            start = int(now // p.every_seconds) * p.every_seconds
            if done.get(p.job_type) == start:
                continue
            try:
                job = await queue.enqueue(
                    JobRequest(
                        p.job_type,
                        priority=DEFAULT_PRIORITIES.get(p.job_type, Priority.NORMAL),
                        max_retries=p.max_retries,
                    ),
                    job_id=period_job_id(p.job_type, start),
                )
            except Exception as exc:
                log.warning("scheduling %s failed: %s", p.job_type, exc)
                continue
            done[p.job_type] = start
            if not job.existing:
                log.info("scheduled %s for period %d (job %s)", p.job_type, start, job.id)
        now = clock()
        wait = min((int(now // p.every_seconds) + 1) * p.every_seconds - now for p in schedule)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(max(wait, 0.01), max_wait))
