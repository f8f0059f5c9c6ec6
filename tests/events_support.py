"""Test doubles and helpers for the domain-event tests."""

from __future__ import annotations

import json
import uuid
from typing import Any

from redis.asyncio import Redis

from arcana.bootstrap import App
from arcana.domain.events import DomainEvent
from arcana.domain.jobs import JobRequest


class InMemoryJobs:
    """An idempotent ``JobEnqueuer``: one job per ``job_id``, every call counted."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRequest] = {}
        self.calls: list[tuple[str, JobRequest]] = []

    async def close(self) -> None:
        """Stands in for ``container.queue`` in tests, which the container closes."""

    async def enqueue(self, request: JobRequest, *, job_id: str | None = None) -> str:
        key = job_id or str(uuid.uuid4())
        self.calls.append((key, request))
        self.jobs.setdefault(key, request)
        return key

    def of_type(self, job_type: str) -> list[JobRequest]:
        return [j for j in self.jobs.values() if j.job_type == job_type]


async def commit_events(container: App, *events: DomainEvent) -> None:
    async with container.uow() as uow:
        uow.record(*events)
        await uow.commit()


def product_event(event_type: str = "product.created", **data: Any) -> DomainEvent:
    pid = str(data.setdefault("productId", str(uuid.uuid4())))
    return DomainEvent(event_type, data, aggregate_id=pid)


async def stream_envelopes(redis: Redis, stream: str) -> list[dict[str, Any]]:
    entries = await redis.xrange(stream)
    return [json.loads(fields[b"event"]) for _eid, fields in entries]


def redis_for(container: App) -> Redis:
    assert container.redis is not None
    return container.redis
