"""Redis transport of domain events (contract §5, §8).

- ``RedisEventPublisher``: XADD to ``<prefix>:events`` (one field ``event`` = the JSON
  envelope, ``MAXLEN ~``) and PUBLISH on ``events:<event_type>``, pipelined per batch.
- ``RedisEventConsumer``: consumer group ``arcana``; XREADGROUP/XACK, XAUTOCLAIM of entries
  whose consumer went quiet, a dead-letter stream ``<prefix>:events:dead`` after N deliveries.
- ``RedisEventFeed``: XREAD tail of the stream for live listeners, resumable by entry id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from arcana import tracing
from arcana.adapters.events.outbox import OutboxRow
from arcana.adapters.partitions import partition_of
from arcana.adapters.redis_client import is_cluster
from arcana.domain.delivery import Envelope, EventSubscription, FeedItem
from arcana.metrics import EVENT_HANDLER_DURATION, EVENTS_DEAD, EVENTS_HANDLED
from arcana.services.events import EventHandlers

log = logging.getLogger(__name__)

GROUP = "arcana"


def channel_for(event_type: str) -> str:
    return f"events:{event_type}"


def encode(envelope: Envelope) -> str:
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisEventPublisher:
    """With several streams (``ARCANA_EVENTS_PARTITIONS``), an event goes to the stream of
    its aggregate, so one aggregate's events keep their order within one stream."""

    def __init__(self, redis: Redis, stream: str | Sequence[str], maxlen: int) -> None:
        self._redis = redis
        self._streams = [stream] if isinstance(stream, str) else list(stream)
        self._stream = self._streams[0]
        self._maxlen = maxlen

    def stream_for(self, row: OutboxRow) -> str:
        if len(self._streams) == 1:
            return self._stream
        return self._streams[partition_of(row.aggregate_id or row.id, len(self._streams))]

    async def publish(self, rows: Sequence[OutboxRow]) -> None:
        if tracing.ENABLED:
            await self._publish_traced(rows)
            return
        cluster = is_cluster(self._redis)
        async with self._redis.pipeline(transaction=False) as pipe:
            for row in rows:
                payload = encode(row.data)
                pipe.xadd(
                    self.stream_for(row), {"event": payload}, maxlen=self._maxlen, approximate=True
                )
                if not cluster:
                    pipe.publish(channel_for(row.event_type), payload)
            await pipe.execute()
        if cluster:
            await self._publish_on_cluster(rows)

    async def _publish_on_cluster(self, rows: Sequence[OutboxRow]) -> None:
        """A cluster pipeline refuses PUBLISH (it has no key to route by); the cluster
        forwards a PUBLISH to every node, so listeners on any node receive it."""
        await asyncio.gather(
            *(self._redis.publish(channel_for(r.event_type), encode(r.data)) for r in rows)
        )

    async def _publish_traced(self, rows: Sequence[OutboxRow]) -> None:
        """One ``outbox.publish`` span per row, in the row's trace; the entry carries the
        span's ``traceparent`` as a second field beside ``event`` (consumers read fields by
        name, and ``event`` stays the contract's envelope, byte for byte)."""
        spans = [
            tracing.start_span(
                f"outbox.publish {row.event_type}",
                {"arcana.event.type": row.event_type, "arcana.event.id": row.id},
                kind="producer",
                parent=row.trace_context,
            )
            for row in rows
        ]
        error: BaseException | None = None
        cluster = is_cluster(self._redis)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for row, span in zip(rows, spans, strict=True):
                    payload = encode(row.data)
                    fields = {"event": payload}
                    traceparent = tracing.traceparent_of(span)
                    if traceparent:
                        fields["traceparent"] = traceparent
                    pipe.xadd(self.stream_for(row), fields, maxlen=self._maxlen, approximate=True)  # type: ignore[arg-type]
                    if not cluster:
                        pipe.publish(channel_for(row.event_type), payload)
                await pipe.execute()
            if cluster:
                await self._publish_on_cluster(rows)
        except BaseException as exc:
            error = exc
            raise
        finally:
            for span in spans:
                tracing.end_span(span, error)


class RedisEventConsumer:
    """One member of the consumer group. Entries of one consumer are handled in stream order;
    a handled entry is acknowledged and its event id remembered, so a duplicate entry (the
    relay delivers at least once) is acknowledged without running the handlers again."""

    def __init__(
        self,
        redis: Redis,
        stream: str,
        handlers: EventHandlers,
        *,
        name: str | None = None,
        claim_idle_ms: int = 30_000,
        max_deliveries: int = 5,
        block_ms: int = 1000,
        batch_size: int = 100,
        handler_retries: int = 3,
        dedupe_ttl: int = 600,
    ) -> None:
        self._redis = redis
        self.stream = stream
        self.dead_stream = f"{stream}:dead"
        self._done_prefix = f"{stream}:handled:{GROUP}:"
        self._handlers = handlers
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._claim_idle_ms = claim_idle_ms
        self._max_deliveries = max_deliveries
        self._block_ms = block_ms
        self._batch_size = batch_size
        self._handler_retries = handler_retries
        self._dedupe_ttl = dedupe_ttl
        self.handled = 0

    async def ensure_group(self) -> None:
        try:
            # From "0": entries added before the group existed are still delivered.
            await self._redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        await self.ensure_group()
        claim_every = max(self._claim_idle_ms / 2000, 0.05)
        next_claim = 0.0
        delay = 0.1
        while not stop.is_set():
            try:
                if loop.time() >= next_claim:
                    await self.claim_stale()
                    next_claim = loop.time() + claim_every
                block = min(self._block_ms, max(int((next_claim - loop.time()) * 1000), 1))
                await self.read_new(block_ms=block)
                delay = 0.1
            except RedisError as exc:
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    await self.ensure_group()
                    continue
                log.warning("event consumer: redis error, retrying in %.1fs: %r", delay, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 5.0)

    async def read_new(self, block_ms: int | None = None) -> int:
        reply: Any = await self._redis.xreadgroup(
            GROUP,
            self.name,
            {self.stream: ">"},
            count=self._batch_size,
            block=self._block_ms if block_ms is None else block_ms,
        )
        entries = [(_s(eid), fields, 1) for _stream, msgs in reply or [] for eid, fields in msgs]
        await self._process(entries)
        return len(entries)

    async def claim_stale(self) -> int:
        """Take over entries another consumer received but did not acknowledge in time."""
        total = 0
        start = "0-0"
        while True:
            reply = await self._redis.xautoclaim(
                self.stream,
                GROUP,
                self.name,
                min_idle_time=self._claim_idle_ms,
                start_id=start,
                count=self._batch_size,
            )
            start = _s(reply[0])
            claimed = [(_s(eid), fields) for eid, fields in reply[1] if fields is not None]
            if claimed:
                entries = []
                for eid, fields in claimed:
                    pending = await self._redis.xpending_range(
                        self.stream, GROUP, min=eid, max=eid, count=1
                    )
                    deliveries = int(pending[0]["times_delivered"]) if pending else 1
                    entries.append((eid, fields, deliveries))
                log.info("event consumer %s claimed %d stale entries", self.name, len(entries))
                await self._process(entries)
                total += len(entries)
            if start == "0-0":
                return total

    async def _process(self, entries: list[tuple[str, Any, int]]) -> None:
        if not entries:
            return
        parsed: list[tuple[str, Envelope | None, int, str]] = []
        parents: dict[str, str] = {}
        for eid, fields, deliveries in entries:
            raw = _s((fields or {}).get(b"event", (fields or {}).get("event", b"")))
            if tracing.ENABLED and fields:
                tp = fields.get(b"traceparent", fields.get("traceparent"))
                if tp:
                    parents[eid] = _s(tp)
            try:
                envelope = json.loads(raw)
                if not isinstance(envelope, dict) or "id" not in envelope:
                    raise ValueError("not an event envelope")
            except ValueError:
                envelope = None
            parsed.append((eid, envelope, deliveries, raw))
        done_keys = [
            self._done_prefix + str(e["id"]) if e else self._done_prefix for _, e, _, _ in parsed
        ]
        # The markers of different events hash to different cluster slots: MGET only works
        # within one slot, so a cluster client reads them slot by slot.
        seen = (
            await self._redis.mget_nonatomic(done_keys)  # type: ignore[attr-defined]
            if is_cluster(self._redis)
            else await self._redis.mget(done_keys)
        )
        handled_now: set[str] = set()
        acks: list[tuple[str, str]] = []
        for (eid, envelope, deliveries, raw), done in zip(parsed, seen, strict=True):
            if envelope is None:
                await self._dead_letter(eid, raw, deliveries, "malformed entry")
                continue
            event_type = str(envelope.get("event_type"))
            if done is None and str(envelope["id"]) not in handled_now:
                error = await self._run_handlers(envelope, parents.get(eid))
                if error is not None:
                    EVENTS_HANDLED.labels(event_type, "error").inc()
                    if deliveries >= self._max_deliveries:
                        await self._dead_letter(eid, raw, deliveries, error)
                    # else: left pending; XAUTOCLAIM redelivers it once idle.
                    continue
                EVENTS_HANDLED.labels(event_type, "ok").inc()
                handled_now.add(str(envelope["id"]))
            else:
                EVENTS_HANDLED.labels(event_type, "duplicate").inc()
            acks.append((eid, str(envelope["id"])))
        if acks:
            # One round trip per batch; a crash before it only means a redelivery.
            async with self._redis.pipeline(transaction=False) as pipe:
                for _eid, event_id in acks:
                    pipe.set(self._done_prefix + event_id, b"1", ex=self._dedupe_ttl)
                pipe.xack(self.stream, GROUP, *[eid for eid, _ in acks])
                await pipe.execute()
            self.handled += len(acks)

    async def _run_handlers(self, envelope: Envelope, traceparent: str | None = None) -> str | None:
        delay = 0.05
        event_type = str(envelope.get("event_type"))
        for attempt in range(1, self._handler_retries + 1):
            t0 = time.perf_counter()
            try:
                with tracing.span(
                    f"event.handle {event_type}",
                    {
                        "arcana.event.type": event_type,
                        "arcana.event.id": str(envelope.get("id")),
                        "arcana.event.attempt": attempt,
                    },
                    kind="consumer",
                    parent=traceparent,
                ):
                    await self._handlers.dispatch(envelope)
                return None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "event %s (%s) handler failed (attempt %d/%d): %r",
                    envelope.get("id"),
                    envelope.get("event_type"),
                    attempt,
                    self._handler_retries,
                    exc,
                )
                if attempt == self._handler_retries:
                    return repr(exc)
                await asyncio.sleep(delay)
                delay *= 2
            finally:
                EVENT_HANDLER_DURATION.labels(event_type).observe(time.perf_counter() - t0)
        return None

    async def _dead_letter(self, eid: str, raw: str, deliveries: int, error: str) -> None:
        log.error("event entry %s dead-lettered after %d deliveries: %s", eid, deliveries, error)
        EVENTS_DEAD.labels("consumer").inc()
        # One transaction on a single Redis. On a cluster the dead-letter stream sits in another
        # slot, so the two commands go separately: a crash between them leaves the entry
        # pending, and it is dead-lettered again (a duplicate dead letter, nothing lost).
        async with self._redis.pipeline(transaction=not is_cluster(self._redis)) as pipe:
            pipe.xadd(
                self.dead_stream,
                {
                    "event": raw,
                    "entry_id": eid,
                    "deliveries": str(deliveries),
                    "error": error[:1000],
                    "consumer": self.name,
                },
            )
            pipe.xack(self.stream, GROUP, eid)
            await pipe.execute()


POSITION_SEPARATOR = "_"
"""Joins the per-stream positions of a feed over several streams into one SSE id."""


class _RedisSubscription:
    """Tails one stream, or several (event partitions): then an item's id holds the position
    in every stream, joined by ``_``, so ``Last-Event-ID`` resumes each of them."""

    def __init__(
        self, redis: Redis, streams: list[str], positions: list[str], closed: asyncio.Event
    ) -> None:
        self._redis = redis
        self._streams = streams
        self._positions = positions
        self._closed = closed
        self._stopped = False
        self._cluster = is_cluster(redis)

    async def _read(self) -> list[tuple[int, Any, Any]]:
        if len(self._streams) == 1 or not self._cluster:
            reply: Any = await self._redis.xread(
                dict(zip(self._streams, self._positions, strict=True)), count=100, block=500
            )
            index = {name: i for i, name in enumerate(self._streams)}
            return [
                (index[_s(name)], eid, fields) for name, msgs in reply or [] for eid, fields in msgs
            ]
        # One XREAD per stream: a cluster serves a multi-key XREAD only within one slot.
        replies: list[Any] = await asyncio.gather(
            *(
                self._redis.xread({name: pos}, count=100, block=500)
                for name, pos in zip(self._streams, self._positions, strict=True)
            )
        )
        return [
            (i, eid, fields)
            for i, reply in enumerate(replies)
            for _name, msgs in reply or []
            for eid, fields in msgs
        ]

    async def items(self, idle_timeout: float) -> AsyncIterator[FeedItem | None]:
        loop = asyncio.get_running_loop()
        last_yield = loop.time()
        while not (self._stopped or self._closed.is_set()):
            got = False
            for i, eid, fields in await self._read():
                self._positions[i] = _s(eid)
                try:
                    envelope = json.loads(_s(fields.get(b"event", b"{}")))
                except ValueError:
                    continue
                got = True
                position = POSITION_SEPARATOR.join(self._positions)
                yield FeedItem(position, str(envelope.get("event_type")), envelope)
            if got:
                last_yield = loop.time()
            elif loop.time() - last_yield >= idle_timeout:
                last_yield = loop.time()
                yield None

    async def close(self) -> None:
        self._stopped = True


class RedisEventFeed:
    def __init__(self, redis: Redis, stream: str | Sequence[str], closed: asyncio.Event) -> None:
        self._redis = redis
        self._streams = [stream] if isinstance(stream, str) else list(stream)
        self._closed = closed

    async def subscribe(self, last_id: str | None) -> EventSubscription:
        if last_id is not None:
            positions = last_id.split(POSITION_SEPARATOR)
            if len(positions) != len(self._streams):
                # An id from another partition layout: resume each stream from its start of
                # "now" rather than guess.
                last_id = None
        if last_id is None:
            # Pin "now" to a concrete id: "$" re-evaluated per XREAD could skip entries.
            positions = []
            for name in self._streams:
                latest = await self._redis.xrevrange(name, count=1)
                positions.append(_s(latest[0][0]) if latest else "0-0")
        return _RedisSubscription(self._redis, self._streams, positions, self._closed)
