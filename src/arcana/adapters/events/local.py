"""Embedded mode (no Redis): the relay hands events to the handlers in this process and to
an in-process broadcaster that feeds live listeners. Rows are marked published only after
their handlers succeeded, so a restart re-dispatches whatever was not handled."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Sequence

from arcana import tracing
from arcana.adapters.events.outbox import OutboxRow
from arcana.adapters.events.relay import DeliveryError
from arcana.domain.delivery import EventSubscription, FeedItem
from arcana.metrics import EVENT_HANDLER_DURATION, EVENTS_HANDLED
from arcana.services.events import EventHandlers

log = logging.getLogger(__name__)


class HandlerFailed(Exception):
    """A handler raised; never treated as an outage, so the row is dropped after N tries."""


class LocalEventFeed:
    """Fan-out to live listeners plus a short replay buffer (ids are outbox ``seq``)."""

    def __init__(self, closed: asyncio.Event, replay: int = 1000, queue_size: int = 1000) -> None:
        self._closed = closed
        self._buffer: collections.deque[FeedItem] = collections.deque(maxlen=replay)
        self._subscribers: set[_LocalSubscription] = set()
        self._queue_size = queue_size

    def publish(self, item: FeedItem) -> None:
        self._buffer.append(item)
        for sub in list(self._subscribers):
            sub.offer(item)

    async def subscribe(self, last_id: str | None) -> EventSubscription:
        sub = _LocalSubscription(self, self._queue_size)
        if last_id is not None:
            after = int(last_id.split("-", 1)[0])
            for item in self._buffer:
                if int(item.id) > after:
                    sub.offer(item)
        self._subscribers.add(sub)
        return sub

    def _drop(self, sub: _LocalSubscription) -> None:
        self._subscribers.discard(sub)


class _LocalSubscription:
    def __init__(self, feed: LocalEventFeed, size: int) -> None:
        self._feed = feed
        self._queue: asyncio.Queue[FeedItem | None] = asyncio.Queue(maxsize=size)
        self._stopped = False
        self._last = -1

    def offer(self, item: FeedItem) -> None:
        if int(item.id) <= self._last:
            return
        self._last = int(item.id)
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:  # a listener that cannot keep up is cut off
            self._stopped = True
            self._feed._drop(self)

    async def items(self, idle_timeout: float) -> AsyncIterator[FeedItem | None]:
        closed = self._feed._closed
        try:
            while not self._stopped and not closed.is_set():
                getter = asyncio.ensure_future(self._queue.get())
                closer = asyncio.ensure_future(closed.wait())
                done, _ = await asyncio.wait(
                    {getter, closer}, timeout=idle_timeout, return_when=asyncio.FIRST_COMPLETED
                )
                closer.cancel()
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                if not done:
                    yield None
        finally:
            await self.close()

    async def close(self) -> None:
        self._stopped = True
        self._feed._drop(self)


class LocalDispatcher:
    """The embedded ``Publisher``: run the handlers of each event, then broadcast it."""

    def __init__(self, handlers: EventHandlers, feed: LocalEventFeed, retries: int = 3) -> None:
        self._handlers = handlers
        self._feed = feed
        self._retries = retries

    async def publish(self, rows: Sequence[OutboxRow]) -> None:
        for done, row in enumerate(rows):
            # The row's trace continues here: dispatch, then one handle span per attempt.
            with tracing.span(
                f"outbox.dispatch {row.event_type}",
                {"arcana.event.type": row.event_type, "arcana.event.id": row.id},
                kind="consumer",
                parent=row.trace_context,
            ):
                await self._dispatch(done, row)
            EVENTS_HANDLED.labels(row.event_type, "ok").inc()
            self._feed.publish(FeedItem(str(row.seq), row.event_type, row.data))

    async def _dispatch(self, done: int, row: OutboxRow) -> None:
        delay = 0.02
        for attempt in range(1, self._retries + 1):
            t0 = time.perf_counter()
            try:
                with tracing.span(
                    f"event.handle {row.event_type}",
                    {
                        "arcana.event.type": row.event_type,
                        "arcana.event.id": row.id,
                        "arcana.event.attempt": attempt,
                    },
                ):
                    await self._handlers.dispatch(row.data)
                return
            except Exception as exc:
                log.warning(
                    "event %s (%s) handler failed (attempt %d/%d): %r",
                    row.id,
                    row.event_type,
                    attempt,
                    self._retries,
                    exc,
                )
                if attempt == self._retries:
                    EVENTS_HANDLED.labels(row.event_type, "error").inc()
                    raise DeliveryError(done) from HandlerFailed(repr(exc))
                await asyncio.sleep(delay)
                delay *= 2
            finally:
                EVENT_HANDLER_DURATION.labels(row.event_type).observe(time.perf_counter() - t0)
