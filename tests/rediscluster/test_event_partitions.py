"""``ARCANA_EVENTS_PARTITIONS=3`` on a single Redis and on the cluster: events spread over
three streams by aggregate, each with its consumer group; one aggregate's events stay in
order in one stream; the live feed tails all three and resumes from a composite id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from arcana.adapters.events.bus import PartitionedConsumer
from arcana.adapters.events.outbox import OutboxRow
from arcana.adapters.events.redis_stream import RedisEventPublisher
from arcana.bootstrap import App
from arcana.config import Settings
from arcana.domain.delivery import FeedItem
from arcana.domain.events import DomainEvent
from arcana.lifecycle import Lifecycle
from tests.conftest import truncate_all, wait_for
from tests.events_support import commit_events, product_event, redis_for, stream_envelopes
from tests.observability.tracing_support import spans

__all__ = ["spans"]


@pytest.fixture(params=["postgres", "cluster"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def pc(settings: Settings) -> AsyncIterator[App]:
    await truncate_all(settings.database.url.get_secret_value())
    c_process = Lifecycle.build(settings.replace(events_partitions=3, events_consumer_block_ms=100))
    c = c_process.app
    try:
        yield c
    finally:
        await c_process.stop()


async def test_events_spread_by_aggregate_and_each_is_handled_once(pc: App) -> None:
    seen: list[tuple[str, int]] = []

    async def record(envelope: dict[str, object]) -> None:
        data = envelope["data"]
        assert isinstance(data, dict)
        seen.append((str(data["productId"]), int(data["n"])))

    pc.events.handlers.register("product.updated", record)
    products = [f"p{i}" for i in range(12)]
    events: list[DomainEvent] = []
    for n in range(3):
        events += [product_event("product.updated", productId=p, n=n) for p in products]
    await commit_events(pc, *events)
    assert await pc.events.relay.drain() is not None

    redis = redis_for(pc)
    per_stream = [await stream_envelopes(redis, s) for s in pc.events.streams]
    assert sum(len(e) for e in per_stream) == 36
    assert all(per_stream), "every partition should hold some aggregates"
    for entries in per_stream:  # one aggregate, one stream, in commit order
        by_product: dict[str, list[int]] = {}
        for env in entries:
            by_product.setdefault(env["data"]["productId"], []).append(env["data"]["n"])
        assert all(ns == [0, 1, 2] for ns in by_product.values())
    homes = [{e["data"]["productId"] for e in entries} for entries in per_stream]
    assert sum(len(h) for h in homes) == len(products)

    consumer = pc.events.consumer("c1")
    assert isinstance(consumer, PartitionedConsumer)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await wait_for(lambda: len(seen) >= 36, timeout=15)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert sorted(seen) == sorted((p, n) for p in products for n in range(3))
    for p in products:
        assert [n for q, n in seen if q == p] == [0, 1, 2]
    for s in pc.events.streams:
        assert (await redis.xpending(s, "arcana"))["pending"] == 0


async def test_the_feed_tails_every_partition_and_resumes(pc: App) -> None:
    sub = await pc.events.feed.subscribe(None)
    got: list[FeedItem] = []

    async def collect(n: int) -> None:
        async for item in sub.items(idle_timeout=0.5):
            if item is not None:
                got.append(item)
            if len(got) >= n:
                return

    await commit_events(
        pc, *(product_event("product.created", productId=f"a{i}") for i in range(9))
    )
    assert await pc.events.relay.drain() is not None
    await asyncio.wait_for(collect(9), 10)
    await sub.close()
    assert {i.envelope["data"]["productId"] for i in got} == {f"a{i}" for i in range(9)}
    assert len(got[0].id.split("_")) == 3

    resume_from = got[4].id
    await commit_events(pc, product_event("product.created", productId="late"))
    assert await pc.events.relay.drain() is not None
    again = await pc.events.feed.subscribe(resume_from)
    rest: list[FeedItem] = []

    async def collect_rest() -> None:
        async for item in again.items(idle_timeout=0.5):
            if item is None:
                return
            rest.append(item)

    await asyncio.wait_for(collect_rest(), 10)
    await again.close()
    seen_before = {i.envelope["id"] for i in got[:5]}
    after = {i.envelope["id"] for i in rest}
    assert after.isdisjoint(seen_before)
    assert {i.envelope["id"] for i in got[5:]} <= after
    assert "late" in {i.envelope["data"]["productId"] for i in rest}


async def test_traced_publishing_keeps_the_partitions(pc: App, spans: InMemorySpanExporter) -> None:
    """With tracing on, the relay publishes through its traced path: each entry still goes to
    its aggregate's stream (and carries its trace context beside ``event``)."""
    products = [f"t{i}" for i in range(9)]
    await commit_events(pc, *(product_event("product.created", productId=p) for p in products))
    assert await pc.events.relay.drain() is not None
    redis = redis_for(pc)
    homes: list[set[str]] = []
    for stream in pc.events.streams:
        entries = await redis.xrange(stream)
        assert all(b"traceparent" in fields for _eid, fields in entries)
        homes.append({json.loads(f[b"event"])["data"]["productId"] for _e, f in entries})
    assert set().union(*homes) == set(products)
    assert sum(len(h) for h in homes) == len(products)
    publisher = RedisEventPublisher(redis, pc.events.streams, 100)
    for index, home in enumerate(homes):
        for product in home:
            row = OutboxRow(0, "x", "event", "product.created", product, {}, datetime.now(UTC), 0)
            assert publisher.stream_for(row) == pc.events.streams[index]
