"""Consumer group ``arcana`` on the Redis stream: handlers run once per event even when a
consumer dies mid-handling or an entry is duplicated; poison entries go to the dead stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from arcana.bootstrap import App, Overrides
from arcana.config import Settings
from arcana.domain.events import DomainEvent
from arcana.domain.jobs import JobRequest
from arcana.lifecycle import Lifecycle
from arcana.services.events import WELCOME_EMAIL_JOB, job_id_for
from tests.conftest import wait_for
from tests.events_support import InMemoryJobs, commit_events, redis_for

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

GROUP = "arcana"


@pytest.fixture
async def bus_process(
    container: App, settings: Settings, doubles: Overrides
) -> AsyncIterator[Lifecycle]:
    """Quick redelivery: entries idle for 150 ms are claimed, dead after 3 deliveries. Built
    after ``container``, which cleared the database, and with the test's doubles."""
    fast = settings.replace(
        events_claim_idle_ms=150,
        events_max_deliveries=3,
        events_handler_retries=1,
        events_consumer_block_ms=100,
    )
    process = Lifecycle.build(fast, doubles)
    try:
        yield process
    finally:
        await process.stop()


@pytest.fixture
def bus_container(bus_process: Lifecycle) -> App:
    return bus_process.app


def registered(email: str = "ann@example.com") -> DomainEvent:
    return DomainEvent(
        "auth.user_registered", {"userId": "u-1", "email": email, "name": "Ann"}, aggregate_id="u-1"
    )


async def pending_count(c: App) -> int:
    info = await redis_for(c).xpending(c.events.stream, GROUP)
    return int(info["pending"])


async def test_registered_user_gets_one_welcome_job_through_relay_and_consumer(
    bus_process: Lifecycle, bus_container: App
) -> None:
    # The whole process as `arcana worker` runs it: relay, consumer, real queue and workers.
    bus_process.start_api_loops()
    bus_process.start_worker_loops()
    event = registered()
    await commit_events(bus_container, event)
    job_id = job_id_for(event.id, WELCOME_EMAIL_JOB)
    job = await wait_for(lambda: bus_container.queue.get(job_id))
    assert job.job_type == "email.welcome"
    assert job.payload == {"user_id": "u-1", "email": "ann@example.com", "name": "Ann"}
    await wait_for(lambda: _drained(bus_container))


async def _drained(c: App) -> bool:
    return await pending_count(c) == 0


class HangingJobs(InMemoryJobs):
    """Records the job, then never returns the first time: the consumer dies right here."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()

    async def enqueue(self, request: JobRequest, *, job_id: str | None = None) -> str:
        key = await super().enqueue(request, job_id=job_id)
        if len(self.calls) == 1:
            self.entered.set()
            await asyncio.Event().wait()
        return key


@pytest.mark.overrides(queue=HangingJobs)
async def test_consumer_dying_mid_handling_is_taken_over_and_effect_happens_once(
    bus_container: App,
) -> None:
    jobs = bus_container.queue
    assert isinstance(jobs, HangingJobs)
    event = registered()
    await commit_events(bus_container, event)
    assert await bus_container.events.relay.drain()

    first = bus_container.events.consumer("doomed")
    stop_first = asyncio.Event()
    task = asyncio.create_task(first.run(stop_first))
    await asyncio.wait_for(jobs.entered.wait(), 10)
    task.cancel()  # the process dies: no XACK
    await asyncio.gather(task, return_exceptions=True)
    assert await pending_count(bus_container) == 1

    second = bus_container.events.consumer("survivor")
    stop = asyncio.Event()
    survivor = asyncio.create_task(second.run(stop))
    try:
        await wait_for(lambda: len(jobs.calls) == 2)
        await wait_for(lambda: _drained(bus_container))
    finally:
        stop.set()
        await survivor
    assert len(jobs.jobs) == 1
    assert list(jobs.jobs) == [job_id_for(event.id, WELCOME_EMAIL_JOB)]
    assert second.handled == 1


async def test_duplicate_entries_of_one_event_run_the_handlers_once(
    bus_container: App,
) -> None:
    calls: list[str] = []

    async def handler(envelope: dict[str, Any]) -> None:
        calls.append(envelope["id"])

    bus_container.events.handlers.register("test.counted", handler)
    event = DomainEvent("test.counted", {})
    redis = redis_for(bus_container)
    consumer = bus_container.events.consumer("c1")
    await consumer.ensure_group()
    for _ in range(2):  # the relay delivered it twice (crash between publish and mark)
        await redis.xadd(bus_container.events.stream, {"event": json.dumps(event.envelope())})
    while await consumer.read_new(block_ms=50):
        pass
    assert calls == [event.id]
    assert await pending_count(bus_container) == 0


async def test_entries_added_before_the_group_existed_are_delivered(
    bus_container: App,
) -> None:
    calls: list[str] = []

    async def handler(envelope: dict[str, Any]) -> None:
        calls.append(envelope["id"])

    bus_container.events.handlers.register("test.early", handler)
    event = DomainEvent("test.early", {})
    await commit_events(bus_container, event)
    assert await bus_container.events.relay.drain()
    consumer = bus_container.events.consumer()
    await consumer.ensure_group()
    await consumer.read_new(block_ms=50)
    assert calls == [event.id]


async def test_poison_event_is_retried_then_dead_lettered(bus_container: App) -> None:
    attempts: list[str] = []

    async def poison(envelope: dict[str, Any]) -> None:
        attempts.append(envelope["id"])
        raise ValueError("cannot handle this")

    bus_container.events.handlers.register("test.poison", poison)
    event = DomainEvent("test.poison", {"n": 1})
    await commit_events(bus_container, event)
    assert await bus_container.events.relay.drain()
    consumer = bus_container.events.consumer("c1")
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    redis = redis_for(bus_container)
    try:
        dead = await wait_for(lambda: redis.xrange(bus_container.events.dead_stream))
    finally:
        stop.set()
        await task
    assert len(attempts) == 3  # max deliveries, one handler try each
    [(_eid, fields)] = dead
    assert json.loads(fields[b"event"]) == event.envelope()
    assert fields[b"deliveries"] == b"3"
    assert b"cannot handle this" in fields[b"error"]
    assert await pending_count(bus_container) == 0


async def test_malformed_entry_goes_straight_to_the_dead_stream(bus_container: App) -> None:
    redis = redis_for(bus_container)
    consumer = bus_container.events.consumer()
    await consumer.ensure_group()
    await redis.xadd(bus_container.events.stream, {"event": "not json"})
    await consumer.read_new(block_ms=50)
    [(_eid, fields)] = await redis.xrange(bus_container.events.dead_stream)
    assert fields[b"event"] == b"not json"
    assert await pending_count(bus_container) == 0


async def test_one_consumer_handles_each_aggregates_events_in_commit_order(
    bus_process: Lifecycle, bus_container: App
) -> None:
    seen: dict[str, list[int]] = {}

    async def handler(envelope: dict[str, Any]) -> None:
        data = envelope["data"]
        seen.setdefault(data["productId"], []).append(data["n"])

    bus_container.events.handlers.register("product.updated", handler)
    bus_process.start_relay()

    async def writer(pid: str) -> None:
        for n in range(10):
            await commit_events(
                bus_container,
                DomainEvent("product.updated", {"productId": pid, "n": n}, aggregate_id=pid),
            )

    consumer = bus_container.events.consumer()
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.gather(*(writer(f"p{i}") for i in range(3)))
        await wait_for(lambda: sum(len(v) for v in seen.values()) == 30)
    finally:
        stop.set()
        await task
    assert seen == {f"p{i}": list(range(10)) for i in range(3)}
