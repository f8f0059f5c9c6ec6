"""``EventBus``: the event-delivery parts the composition root hands to entry points.

The Redis stream's adapters are imported only when there is Redis: an embedded process never
loads redis-py (``bootstrap.py`` says why).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from arcana.adapters.database import Database
from arcana.adapters.events.local import LocalDispatcher, LocalEventFeed
from arcana.adapters.events.relay import OutboxRelay, Publisher
from arcana.config import Settings
from arcana.domain.delivery import EventFeed, EventHandlers, JobEnqueuer

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from arcana.adapters.events.redis_stream import RedisEventConsumer


def event_streams(prefix: str, partitions: int) -> list[str]:
    if partitions == 1:
        return [f"{prefix}:events"]
    from arcana.adapters.partitions import partition_tags

    return [f"{{{tag}}}" for tag in partition_tags(f"{prefix}:events", partitions)]


class PartitionedConsumer:
    """Consumers of every event partition, run as one background loop."""

    def __init__(self, members: list[RedisEventConsumer]) -> None:
        self.members = members

    @property
    def handled(self) -> int:
        return sum(m.handled for m in self.members)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(m.run(stop) for m in self.members))


class EventBus:
    """With Redis: the relay publishes to the stream and channels, ``consumer()`` builds group
    members, the feed tails the stream. Embedded: the relay dispatches to ``handlers`` in
    process and the feed is an in-process broadcaster."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        redis: Redis | None,
        handlers: EventHandlers,
        jobs: JobEnqueuer | None,
    ) -> None:
        self._settings = settings
        self._db = db
        self._redis = redis
        self._jobs = jobs
        self.handlers = handlers
        self.streams = event_streams(settings.redis.prefix, settings.events.partitions)
        """One stream per event partition; with one partition the historical key."""
        self.stream = self.streams[0]
        self.dead_stream = f"{self.stream}:dead"
        self.closed = asyncio.Event()
        """Set on shutdown: live streams end so the HTTP server can stop promptly."""
        publisher: Publisher
        self.feed: EventFeed
        if redis is not None:
            from arcana.adapters.events.redis_stream import RedisEventFeed, RedisEventPublisher

            publisher = RedisEventPublisher(redis, self.streams, settings.events.stream_maxlen)
            self.feed = RedisEventFeed(redis, self.streams, self.closed)
        else:
            local = LocalEventFeed(self.closed)
            publisher = LocalDispatcher(handlers, local, settings.events.handler_retries)
            self.feed = local
        self.relay = self.new_relay(publisher)

    @property
    def embedded(self) -> bool:
        return self._redis is None

    def new_relay(self, publisher: Publisher | None = None) -> OutboxRelay:
        """The process's relay is ``self.relay``; more are for tests and benchmarks."""
        if publisher is None:
            publisher = self.relay._publisher
        s = self._settings
        return OutboxRelay(
            self._db,
            publisher,
            self._jobs,
            batch_size=s.events.relay_batch,
            poll_interval=s.events.relay_poll_seconds,
            max_attempts=s.events.max_deliveries,
        )

    def consumer(self, name: str | None = None) -> RedisEventConsumer | PartitionedConsumer:
        """A member of group ``arcana``; with several event partitions, one member of each
        partition's group run together."""
        if self._redis is None:
            raise RuntimeError("event consumers need Redis; embedded mode dispatches in the relay")
        if len(self.streams) > 1:
            return PartitionedConsumer(
                [
                    self.stream_consumer(s, f"{name}-p{i}" if name else None)
                    for i, s in enumerate(self.streams)
                ]
            )
        return self.stream_consumer(self.stream, name)

    def stream_consumer(self, stream: str, name: str | None = None) -> RedisEventConsumer:
        assert self._redis is not None
        from arcana.adapters.events.redis_stream import RedisEventConsumer

        s = self._settings
        return RedisEventConsumer(
            self._redis,
            stream,
            self.handlers,
            name=name,
            claim_idle_ms=s.events.claim_idle_ms,
            max_deliveries=s.events.max_deliveries,
            block_ms=s.events.consumer_block_ms,
            handler_retries=s.events.handler_retries,
        )

    def close_streams(self) -> None:
        self.closed.set()
