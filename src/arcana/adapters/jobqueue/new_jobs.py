"""What both queue backends do alike when a request is enqueued: the job's id, and the ``Job``
that describes the record just stored (first attempt ahead, scheduled if delayed)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from arcana.domain.jobs import Job, JobRequest, JobStatus


def new_job_id() -> str:
    return str(uuid.uuid4())


def new_job(
    request: JobRequest,
    job_id: str,
    created_at: datetime,
    *,
    scheduled_at: datetime | None = None,
    trace_context: str | None = None,
) -> Job:
    """``scheduled_at`` defaults to ``created_at`` plus the request's delay; a backend whose
    store sets the times (Redis, in its script) passes both as stored."""
    delay = max(request.delay_seconds, 0.0)
    if scheduled_at is None:
        scheduled_at = created_at + timedelta(seconds=delay)
    return Job(
        id=job_id,
        job_type=request.job_type,
        payload=request.payload,
        priority=request.priority,
        max_retries=request.max_retries,
        retry_count=0,
        status=JobStatus.SCHEDULED if delay > 0 else JobStatus.QUEUED,
        created_at=created_at,
        scheduled_at=created_at + timedelta(seconds=delay)
        if scheduled_at is None
        else scheduled_at,
        unique_key=request.unique_key,
        trace_context=trace_context,
    )
