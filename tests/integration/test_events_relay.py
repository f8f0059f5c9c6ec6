"""The outbox relay on both backends: committed events are delivered in order, exactly the
committed ones, after a restart too, and concurrent relays never deliver a row twice."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections import defaultdict
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from arcana.adapters.tables import outbox
from arcana.bootstrap import App
from arcana.config import Settings
from arcana.domain.events import DomainEvent
from arcana.domain.jobs import JobRequest, Priority
from arcana.lifecycle import Lifecycle
from tests.conftest import wait_for
from tests.events_support import (
    InMemoryJobs,
    commit_events,
    product_event,
    redis_for,
    stream_envelopes,
)
from tests.process import free_port

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


class Recorder:
    """Collects envelopes delivered to the handlers (embedded) or to the stream (Redis)."""

    def __init__(self, container: App) -> None:
        self.container = container
        self.handled: list[dict[str, Any]] = []
        if container.events.embedded:
            for event_type in ("product.created", "product.updated", "test.marker"):
                container.events.handlers.register(event_type, self._record)

    async def _record(self, envelope: dict[str, Any]) -> None:
        self.handled.append(envelope)

    async def delivered(self) -> list[dict[str, Any]]:
        if self.container.events.embedded:
            return list(self.handled)
        return await stream_envelopes(redis_for(self.container), self.container.events.stream)

    async def ids(self) -> list[str]:
        return [e["id"] for e in await self.delivered()]


async def unpublished(container: App) -> int:
    return await container.events.relay.pending()


async def test_committed_event_is_delivered_with_the_contract_envelope(
    process: Lifecycle,
    container: App,
) -> None:
    rec = Recorder(container)
    process.start_relay()
    event = product_event("product.created")
    await commit_events(container, event)
    [envelope] = await wait_for(rec.delivered)
    assert envelope == event.envelope()
    assert set(envelope) == {"id", "event_type", "data", "timestamp", "source"}
    assert envelope["source"] == "arcana"
    assert RFC3339.match(envelope["timestamp"])
    datetime.fromisoformat(envelope["timestamp"].replace("Z", "+00:00"))
    await wait_for(lambda: _zero(container))


async def _zero(container: App) -> bool:
    return await unpublished(container) == 0


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_stream_entry_and_pubsub_message_carry_the_same_json(
    process: Lifecycle, container: App
) -> None:
    redis = redis_for(container)
    event = product_event("product.low_stock", stock=3)
    pubsub = redis.pubsub()
    await pubsub.subscribe("events:product.low_stock")
    try:
        process.start_relay()
        await commit_events(container, event)

        async def message() -> dict[str, Any] | None:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            while msg is not None:
                body = json.loads(msg["data"])
                if body["id"] == event.id:
                    return msg
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            return None

        msg = await wait_for(message)
        assert msg["channel"] == b"events:product.low_stock"
        [(_eid, fields)] = await redis.xrange(f"{container.settings.redis.prefix}:events")
        assert list(fields) == [b"event"]
        assert json.loads(fields[b"event"]) == json.loads(msg["data"]) == event.envelope()
        assert event.envelope()["data"] == {"productId": event.aggregate_id, "stock": 3}
    finally:
        await pubsub.aclose()


async def test_rolled_back_unit_of_work_publishes_nothing(
    process: Lifecycle, container: App
) -> None:
    rec = Recorder(container)
    process.start_relay()
    lost = product_event()
    async with container.uow() as uow:
        uow.record(lost)

    async def failing() -> None:
        async with container.uow() as uow:
            uow.record(product_event())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await failing()
    marker = DomainEvent("test.marker", {})
    await commit_events(container, marker)
    # Rows leave in commit order, so once the marker is out nothing else is coming.
    assert await wait_for(rec.ids) == [marker.id]


async def test_events_committed_while_no_relay_runs_are_delivered_when_one_starts(
    process: Lifecycle,
    container: App,
) -> None:
    rec = Recorder(container)
    events = [product_event() for _ in range(5)]
    for e in events:
        await commit_events(container, e)
    assert await unpublished(container) == 5
    process.start_relay()  # the "restarted" process
    await wait_for(lambda: _count(rec, 5))
    assert await rec.ids() == [e.id for e in events]
    await wait_for(lambda: _zero(container))


async def _count(rec: Recorder, n: int) -> bool:
    return len(await rec.delivered()) >= n


async def test_order_per_aggregate_is_preserved(process: Lifecycle, container: App) -> None:
    rec = Recorder(container)
    process.start_relay()
    products = [f"p{i}" for i in range(4)]
    recorded: dict[str, list[str]] = defaultdict(list)

    async def writer(pid: str) -> None:
        for n in range(10):
            e = DomainEvent("product.updated", {"productId": pid, "n": n}, aggregate_id=pid)
            recorded[pid].append(e.id)
            await commit_events(container, e)

    await asyncio.gather(*(writer(p) for p in products))
    await wait_for(lambda: _count(rec, 40))
    seen: dict[str, list[str]] = defaultdict(list)
    for envelope in await rec.delivered():
        seen[envelope["data"]["productId"]].append(envelope["id"])
    assert seen == recorded


async def test_concurrent_relays_never_deliver_a_row_twice(
    container: App, settings: Settings
) -> None:
    rec = Recorder(container)
    other_process = Lifecycle.build(settings)  # a second process: own engine and pool
    other = other_process.app
    try:
        if other.events.embedded:  # the recorder sees what either process's relay handled
            other.events.handlers.register("product.created", rec._record)
        events = [product_event() for _ in range(120)]
        for i in range(0, 120, 10):
            await commit_events(container, *events[i : i + 10])
        relays = [container.events.new_relay(), container.events.new_relay(), other.events.relay]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(r.run(stop)) for r in relays]
        try:
            await wait_for(lambda: _zero(container), timeout=30)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        ids = await rec.ids()
        assert sorted(ids) == sorted(e.id for e in events)
        assert ids == [e.id for e in events]  # and in commit order
        assert sum(r.published for r in relays) == 120
    finally:
        await other_process.stop()


@pytest.mark.overrides(queue=InMemoryJobs)
async def test_job_requests_in_the_outbox_reach_the_queue_once_with_the_row_id(
    process: Lifecycle,
    container: App,
) -> None:
    jobs = container.queue
    assert isinstance(jobs, InMemoryJobs)
    process.start_relay()
    async with container.uow() as uow:
        uow.enqueue(JobRequest("system.noop", {}, priority=Priority.HIGH))
        await uow.commit()
    await wait_for(lambda: len(jobs.calls) == 1)
    async with container.db.engine.connect() as conn:
        row = (await conn.execute(select(outbox.c.id, outbox.c.kind))).one()
    [(job_id, request)] = jobs.calls
    assert (job_id, row.kind) == (row.id, "job")
    assert request == JobRequest("system.noop", {}, priority=Priority.HIGH)
    await wait_for(lambda: _zero(container))


async def test_embedded_handler_failures_are_retried_then_given_up(
    tmp_path: Any,
) -> None:
    from tests.conftest import base_settings

    settings = base_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/a.db",
        var_dir=tmp_path,
        events_max_deliveries=2,
        events_handler_retries=1,
    )
    process = Lifecycle.build(settings)
    container = process.app
    await process.start()
    try:
        calls: list[str] = []

        async def flaky(envelope: dict[str, Any]) -> None:
            calls.append(envelope["id"])
            if envelope["data"].get("poison"):
                raise ValueError("cannot handle")

        container.events.handlers.register("product.created", flaky)
        process.start_relay()
        bad, good = product_event(poison=True), product_event()
        await commit_events(container, bad, good)
        await wait_for(lambda: good.id in calls)
        assert calls == [bad.id, bad.id, good.id]
        await wait_for(lambda: _zero(container))
    finally:
        await process.stop()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server binary")
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_redis_outage_keeps_rows_until_it_is_back(
    settings: Settings, container: App, tmp_path: Any
) -> None:
    port = free_port()
    down_process = Lifecycle.build(settings.replace(redis_url=f"redis://127.0.0.1:{port}/0"))
    down = down_process.app
    server = None
    try:
        down_process.start_relay()
        events = [product_event() for _ in range(3)]
        await commit_events(down, *events)
        await wait_for(lambda: down.events.relay.failures > 0, timeout=10)
        assert await unpublished(down) == 3
        server = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
        )
        await wait_for(lambda: _zero(down), timeout=30)
        got = await stream_envelopes(redis_for(down), down.events.stream)
        assert [e["id"] for e in got] == [e.id for e in events]
    finally:
        await down_process.stop()
        if server is not None:
            server.terminate()
            server.wait(10)
