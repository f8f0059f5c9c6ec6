"""Operator use cases of the job queue: enqueue a known type, inspect, retry dead jobs."""

from __future__ import annotations

from typing import Any

from arcana.config import JobSettings
from arcana.domain.jobs import (
    CLEANUP_TOKENS,
    JOB_TYPES,
    SYNC_PENDING_USERS,
    Job,
    JobQueue,
    JobRequest,
    JobStatus,
    Priority,
    QueueStats,
    is_known_type,
)
from arcana.errors import FieldProblem, NotFound, ValidationFailed


def periodic_schedule(settings: JobSettings) -> dict[str, int]:
    """Every periodic type of the catalogue → its period in seconds, from the settings: what
    the scheduler enqueues and what the admin console shows."""
    periods = {
        SYNC_PENDING_USERS: settings.schedule_pending_users_seconds,
        CLEANUP_TOKENS: settings.schedule_cleanup_tokens_seconds,
    }
    unscheduled = [t.name for t in JOB_TYPES.values() if t.periodic and t not in periods]
    assert not unscheduled, f"periodic job types without a period: {unscheduled}"
    return {t.name: every for t, every in periods.items()}


class JobService:
    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    def known_types(self) -> list[str]:
        return sorted(JOB_TYPES)

    async def enqueue(
        self,
        job_type: str,
        payload: dict[str, Any] | None = None,
        *,
        priority: Priority | None = None,
        delay_seconds: float = 0.0,
        max_retries: int = 3,
        unique_key: str | None = None,
    ) -> Job:
        """Enqueue a registered type; ``existing`` is set on the result when ``unique_key`` is
        held by an active job (which is returned instead)."""
        if not is_known_type(job_type):
            raise ValidationFailed(
                f"unknown job type {job_type!r}; known: {', '.join(self.known_types())}",
                problems=[FieldProblem("job_type", "unknown job type")],
            )
        if delay_seconds < 0:
            raise ValidationFailed("delay_seconds must be >= 0")
        if max_retries < 0:
            raise ValidationFailed("max_retries must be >= 0")
        request = JobRequest(
            job_type=job_type,
            payload=dict(payload or {}),
            priority=priority if priority is not None else JOB_TYPES[job_type].priority,
            delay_seconds=delay_seconds,
            max_retries=max_retries,
            unique_key=unique_key or None,
        )
        return await self.queue.enqueue(request)

    async def get(self, job_id: str) -> Job:
        job = await self.queue.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    async def list_jobs(
        self, status: JobStatus | None, page: int, size: int
    ) -> tuple[list[Job], int]:
        return await self.queue.list_jobs(status, page, size)

    async def retry(self, job_id: str) -> Job:
        return await self.queue.retry_dead(job_id)

    async def stats(self) -> QueueStats:
        return await self.queue.stats()
