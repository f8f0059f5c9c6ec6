"""Ports of event delivery: how delivered events reach their handlers, how handlers reach the
job queue, how live listeners see events.

The envelope handed to a handler is the contract §5 JSON object
(``{id, event_type, data, timestamp, source}``) exactly as it travelled on the wire.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from arcana.domain.events import DomainEvent
from arcana.domain.jobs import JobRequest

log = logging.getLogger(__name__)

Envelope = dict[str, Any]
EventHandler = Callable[[Envelope], Awaitable[None]]
"""Reacts to one delivered event. Must be idempotent: delivery is at least once."""


class EventDispatcher(Protocol):
    """What delivery adapters (the embedded dispatcher, the Redis stream consumers) call for
    each event they deliver. Raising means "not handled": the adapter retries or dead-letters."""

    async def dispatch(self, envelope: Envelope) -> None: ...


class EventHandlers:
    """Handlers by event type, the ``EventDispatcher`` the composition root wires. ``dispatch``
    runs every handler of the event's type in order and lets the first failure propagate (the
    caller retries the whole event). Events of a type with no handler are ignored."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[EventHandler]] = {}

    def register(self, event_type: str, handler: EventHandler) -> None:
        self._handlers.setdefault(event_type, []).append(handler)

    def handles(self, event_type: str) -> bool:
        return bool(self._handlers.get(event_type))

    @property
    def event_types(self) -> list[str]:
        return sorted(self._handlers)

    async def dispatch(self, envelope: Envelope) -> None:
        for handler in self._handlers.get(str(envelope.get("event_type")), ()):
            await handler(envelope)


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


class OutboxHistory(Protocol):
    """Outbox rows that were already relayed: only history, kept for a retention period."""

    async def purge_published(self, before: datetime) -> int:
        """Delete the rows published before ``before``; returns how many."""
        ...


CommitListener = Callable[[list[DomainEvent]], None]


class CommitListeners:
    """Called synchronously after each commit of this process with the events it recorded:
    wakes the outbox relay at once instead of at its next poll, counts events for the console.
    A listener that raises is logged and the others still run."""

    def __init__(self) -> None:
        self._listeners: list[CommitListener] = []

    def add(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    def __call__(self, events: list[DomainEvent]) -> None:
        for listener in self._listeners:
            try:
                listener(events)
            except Exception:
                log.exception("commit listener failed")
