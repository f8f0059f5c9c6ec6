"""Job requests as services see them. The queue itself (Redis or SQL) is an adapter.

Services never enqueue directly: they call ``uow.enqueue(JobRequest(...))`` and the request
is written to the outbox in the same transaction as the change, then handed to the queue by
the outbox relay. A rolled-back transaction enqueues nothing; a crash after commit loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any, Protocol

from arcana.errors import ValidationFailed


class Priority(IntEnum):
    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3


class JobStatus(StrEnum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    DEAD = "dead"


SECRET_PAYLOAD_FIELDS = frozenset({"reset_token"})
"""Payload fields that are secrets: sealed at rest by whoever enqueues them, never shown."""


def redact_payload(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: "***" if k in SECRET_PAYLOAD_FIELDS else v for k, v in payload.items()}


@dataclass(frozen=True, slots=True)
class JobRequest:
    job_type: str
    payload: dict[str, Any] = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    delay_seconds: float = 0.0
    max_retries: int = 3
    unique_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_type": self.job_type,
            "payload": self.payload,
            "priority": self.priority.name,
            "delay_seconds": self.delay_seconds,
            "max_retries": self.max_retries,
            "unique_key": self.unique_key,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRequest:
        return cls(
            job_type=data["job_type"],
            payload=dict(data.get("payload") or {}),
            priority=Priority[data.get("priority", "NORMAL")],
            delay_seconds=float(data.get("delay_seconds") or 0.0),
            max_retries=int(data.get("max_retries", 3)),
            unique_key=data.get("unique_key"),
        )


# -- the queue -------------------------------------------------------------------------------

ACTIVE_STATUSES = frozenset(
    {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RUNNING, JobStatus.RETRYING}
)
"""Statuses during which a job holds its ``unique_key``."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


@dataclass(slots=True)
class Job:
    """A job as the queue stores it (contract §4).

    ``retry_count`` counts the retries already made (failed attempts that were rescheduled, and
    operator retries from the dead-letter set); the current attempt is ``retry_count + 1``.
    ``trace_context`` is stored beside the job, never in its payload. ``existing`` is not
    stored: ``enqueue`` sets it when it returned a job that was already
    there (same ``job_id``, or ``unique_key`` held) instead of creating one.
    """

    id: str
    job_type: str
    payload: dict[str, Any]
    priority: Priority
    max_retries: int
    retry_count: int
    status: JobStatus
    created_at: datetime
    scheduled_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_error: str | None = None
    unique_key: str | None = None
    existing: bool = False
    trace_context: str | None = None
    """W3C traceparent of the work that enqueued the job (tracing on only); not in the API."""

    @property
    def attempt(self) -> int:
        return self.retry_count + 1

    def to_dict(self) -> dict[str, Any]:
        """What operators see (admin routes, the CLI): secret payload fields as ``"***"``."""
        return {
            "id": self.id,
            "job_type": self.job_type,
            "payload": redact_payload(self.payload),
            "priority": self.priority.name,
            "max_retries": self.max_retries,
            "retry_count": self.retry_count,
            "created_at": _iso(self.created_at),
            "scheduled_at": _iso(self.scheduled_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "status": self.status.value,
            "last_error": self.last_error,
            "unique_key": self.unique_key,
        }


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts for operators and metrics. ``depth`` is ready-to-run jobs per priority name."""

    depth: dict[str, int]
    scheduled: int
    retrying: int
    running: int
    succeeded: int
    dead: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "depth": dict(self.depth),
            "queued": sum(self.depth.values()),
            "scheduled": self.scheduled,
            "retrying": self.retrying,
            "running": self.running,
            "succeeded": self.succeeded,
            "dead": self.dead,
        }


def backoff_delay(retry_count: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**retry_count)].

    ``retry_count`` is the number of retries made before this failure (0 for the first).
    """
    ceiling = min(cap, base * float(2 ** min(retry_count, 62)))
    return float(ceiling * rand())


class JobQueue(Protocol):
    """A durable queue of jobs with leases (at-least-once delivery).

    A worker ``fetch``es jobs, which become ``running`` under a lease that ends
    ``lease_seconds`` later unless ``heartbeat`` extends it; ``reap`` returns the jobs whose
    lease ended (their worker died) to the queue. ``complete``/``fail`` finish an attempt only
    for the worker that holds the lease.
    """

    async def enqueue(self, request: JobRequest, *, job_id: str | None = None) -> Job:
        """Create a job. With ``job_id`` of a job that exists, or a ``unique_key`` held by an
        active job, return that job (``existing=True``) and enqueue nothing."""
        ...

    async def enqueue_many(self, requests: Sequence[JobRequest]) -> list[Job]: ...

    async def get(self, job_id: str) -> Job | None: ...

    async def list_jobs(
        self, status: JobStatus | None, page: int, size: int
    ) -> tuple[list[Job], int]:
        """One page (0-based) of jobs with ``status`` (all when ``None``) and the total."""
        ...

    async def stats(self) -> QueueStats: ...

    async def retry_dead(self, job_id: str) -> Job:
        """Queue a dead job again (``retry_count`` + 1). ``NotFound``; ``InvalidState`` if it is
        not dead."""
        ...

    async def fetch(self, worker_id: str, limit: int, lease_seconds: float) -> list[Job]: ...

    async def heartbeat(
        self, worker_id: str, job_ids: Sequence[str], lease_seconds: float
    ) -> None: ...

    async def complete(self, worker_id: str, job_ids: Sequence[str]) -> int:
        """Mark attempts succeeded; returns how many were still leased to ``worker_id``."""
        ...

    async def fail(
        self, worker_id: str, job_id: str, error: str, retry_delay: float
    ) -> JobStatus | None:
        """Record a failed attempt: ``retrying`` after ``retry_delay`` seconds while retries
        remain, else ``dead``. ``None`` if the lease was lost."""
        ...

    async def release(self, worker_id: str, job_ids: Sequence[str]) -> int:
        """Give leased jobs back unstarted (graceful shutdown); they keep their place."""
        ...

    async def reap(self) -> int:
        """Requeue jobs whose lease expired, promote due delayed jobs, drop finished jobs
        older than the retention TTL. Returns the number of jobs requeued."""
        ...

    async def wait_for_work(self, timeout: float) -> None:
        """Return when work may be available, or after ``timeout`` seconds."""
        ...

    async def close(self) -> None: ...


# -- catalogue ---------------------------------------------------------------------------------

DEFAULT_PRIORITIES: dict[str, Priority] = {
    "system.noop": Priority.NORMAL,
    "system.echo": Priority.NORMAL,
    "email.welcome": Priority.NORMAL,
    "email.password_reset": Priority.HIGH,
    "auth.password_reset_request": Priority.HIGH,
    "email.security_notice": Priority.HIGH,
    "notify.admins_stock": Priority.NORMAL,
    "sync.pending_users": Priority.NORMAL,
    "sync.cleanup_tokens": Priority.LOW,
}
"""Built-in job types and their default priority. Enqueueing any other type is refused."""


def is_known_type(job_type: str) -> bool:
    return job_type in DEFAULT_PRIORITIES


def parse_priority(value: str | int | Priority) -> Priority:
    if isinstance(value, Priority):
        return value
    if isinstance(value, int):
        return Priority(value)
    try:
        return Priority[value.strip().upper()]
    except KeyError:
        raise ValidationFailed(
            f"unknown priority {value!r}; use LOW, NORMAL, HIGH or CRITICAL"
        ) from None
