"""Redis Cluster readiness: every multi-key step of the job queue is one Lua script whose
keys — the declared ones and every key its body touches — live in ONE hash slot, and each
call declares at least one key so a cluster client routes it to that slot.

The keys are read off the real server with MONITOR while the whole protocol runs, so a
script that builds a key the declared ones do not cover is caught too."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from arcana.adapters.jobqueue.redis import RedisJobQueue
from arcana.domain.jobs import JobRequest, Priority
from tests.conftest import REDIS_URL, wait_for

KEYLESS = {"TIME", "PING"}


@pytest.fixture
async def redis(redis_session: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


async def test_every_queue_script_stays_in_one_slot(redis: Redis, redis_session: str) -> None:
    prefix = f"{redis_session}-slots-{uuid.uuid4().hex[:6]}"
    queue = RedisJobQueue(redis, prefix, finished_ttl=60)
    seen: list[dict[str, str]] = []
    monitor_client = Redis.from_url(REDIS_URL)
    ready = asyncio.Event()

    async def watch() -> None:
        async with monitor_client.monitor() as mon:
            ready.set()
            async for item in mon.listen():
                seen.append(item)

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(ready.wait(), 5)
        await asyncio.sleep(0.05)  # MONITOR is registered once its reply was read
        # The whole protocol: enqueue (plain, unique, delayed, batched, idempotent id),
        # fetch, heartbeat, complete, fail -> retry -> dead, retry from dead, release, reap.
        await queue.enqueue(JobRequest("system.noop", priority=Priority.HIGH))
        await queue.enqueue(JobRequest("system.noop", unique_key="k1"))
        await queue.enqueue(JobRequest("system.noop", delay_seconds=30))
        await queue.enqueue(JobRequest("system.noop"), job_id="fixed-id")
        await queue.enqueue(JobRequest("system.noop"), job_id="fixed-id")
        await queue.enqueue_many([JobRequest("system.noop") for _ in range(3)])
        dying = await queue.enqueue(JobRequest("system.echo", max_retries=0))
        jobs = await queue.fetch("w1", 20, 30)
        assert jobs
        ids = [j.id for j in jobs]
        await queue.heartbeat("w1", ids, 30)
        await queue.fail("w1", dying.id, "boom", 0)
        await queue.retry_dead(dying.id)
        await queue.complete("w1", ids[:2])
        await queue.release("w1", ids[2:])
        await queue.reap()
        await queue.stats()
        marker = f"{prefix}-done"
        await redis.get(marker)
        await wait_for(lambda: any(marker in s["command"] for s in seen), timeout=5)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await monitor_client.aclose()
        await queue.close()

    calls: list[tuple[list[str], list[str]]] = []  # (declared keys, keys touched by the body)
    ours = False  # whether the script running now is one of this test's calls
    for item in seen:
        words = item["command"].split(" ")
        name = words[0].upper()
        if item.get("client_type") == "lua":
            if ours and name not in KEYLESS and len(words) > 1:
                calls[-1][1].append(words[1])
        elif name in {"EVALSHA", "EVAL"}:
            # Other users of the shared server run scripts too: their bodies are not ours.
            ours = prefix in item["command"]
            if ours:
                numkeys = int(words[2])
                calls.append((words[3 : 3 + numkeys], []))
    assert len(calls) >= 10, "the scenario should have run every script"
    for declared, touched in calls:
        assert declared, "a script call without keys cannot be routed in a cluster"
        slots = {key_slot(k.encode()) for k in [*declared, *touched]}
        assert len(slots) == 1, f"keys span slots: {declared + touched}"
        assert all(k.startswith(f"{{{prefix}}}") for k in [*declared, *touched])
        # Every key the body touches is declared, except job hashes found through the sets.
        undeclared = {k for k in touched if k not in declared}
        assert all(k.startswith(f"{{{prefix}}}:q:j:") for k in undeclared), undeclared
