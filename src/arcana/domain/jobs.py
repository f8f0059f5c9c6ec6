"""Job requests as services see them. The queue itself (Redis or SQL) is an adapter.

Services never enqueue directly: they call ``uow.enqueue(JobRequest(...))`` and the request
is written to the outbox in the same transaction as the change, then handed to the queue by
the outbox relay. A rolled-back transaction enqueues nothing; a crash after commit loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any


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
