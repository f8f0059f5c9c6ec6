"""Ports of event delivery: how handlers reach the job queue, how live listeners see events.

The envelope handed to a handler is the contract §5 JSON object
(``{id, event_type, data, timestamp, source}``) exactly as it travelled on the wire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from arcana.domain.jobs import JobRequest

Envelope = dict[str, Any]
EventHandler = Callable[[Envelope], Awaitable[None]]
"""Reacts to one delivered event. Must be idempotent: delivery is at least once."""


class JobEnqueuer(Protocol):
    """The slice of the job queue event handlers need. Enqueueing twice with the same
    ``job_id`` yields one job, which is what makes redelivered events harmless."""

    async def enqueue(self, request: JobRequest, *, job_id: str | None = None) -> object: ...


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One event as a live listener sees it; ``id`` is the resume position (the Redis stream
    entry id, or the outbox sequence number in embedded mode)."""

    id: str
    event_type: str
    envelope: Envelope


class EventSubscription(Protocol):
    def items(self, idle_timeout: float) -> AsyncIterator[FeedItem | None]:
        """Events as they are published; ``None`` after ``idle_timeout`` seconds of silence
        (lets the caller send a keep-alive). Ends when the feed closes."""
        ...

    async def close(self) -> None: ...


class EventFeed(Protocol):
    """Live events for listeners such as the SSE endpoint."""

    async def subscribe(self, last_id: str | None) -> EventSubscription:
        """Start listening. With ``last_id`` the events after it are replayed first (best
        effort); without it only events published from now on are seen."""
        ...
