"""The pre-packed enqueue call keeps working when Redis forgot the script or dropped the
connection it kept, and gives its connections back on close."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from arcana.adapters.jobqueue.redis import RedisJobQueue
from arcana.domain.jobs import JobRequest, JobStatus
from tests.app_support import private_redis
from tests.reliability.stack import PrivateRedis

__all__ = ["private_redis"]  # a fixture of this module

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def redis(private_redis: PrivateRedis) -> AsyncIterator[Redis]:
    """A server of this test's own: ``SCRIPT FLUSH`` would otherwise empty the script cache of
    every other user of the shared Redis."""
    client = Redis.from_url(private_redis.url)
    yield client
    await client.aclose()


@pytest.fixture
async def queue(redis: Redis) -> AsyncIterator[RedisJobQueue]:
    prefix = f"arcana-test-script-{uuid.uuid4().hex[:8]}"
    q = RedisJobQueue(redis, prefix, finished_ttl=60)
    yield q
    await q.close()
    async for key in redis.scan_iter(match=f"*{prefix}*", count=1000):
        await redis.delete(key)


async def enqueue_and_find(queue: RedisJobQueue) -> None:
    job = await queue.enqueue(JobRequest("system.echo", {"message": "hi"}))
    stored = await queue.get(job.id)
    assert stored is not None
    assert stored.status == JobStatus.QUEUED


async def test_enqueue_after_redis_forgot_the_script(redis: Redis, queue: RedisJobQueue) -> None:
    await enqueue_and_find(queue)
    await redis.script_flush()  # as after a Redis restart: NOSCRIPT, then loaded again
    await enqueue_and_find(queue)
    await enqueue_and_find(queue)


async def test_enqueue_after_the_kept_connection_was_dropped(
    redis: Redis, queue: RedisJobQueue
) -> None:
    await enqueue_and_find(queue)
    kept = queue._enqueue._idle
    assert kept, "a connection is kept for the next enqueue"
    host, port = kept[0]._writer.get_extra_info("sockname")[:2]  # type: ignore[attr-defined]
    assert await redis.client_kill_filter(addr=f"{host}:{port}") == 1
    await enqueue_and_find(queue)
    await enqueue_and_find(queue)


async def test_close_gives_the_kept_connections_back(redis: Redis) -> None:
    q = RedisJobQueue(redis, f"arcana-test-script-{uuid.uuid4().hex[:8]}", finished_ttl=60)
    await q.enqueue(JobRequest("system.echo", {"message": "hi"}))
    in_use = len(redis.connection_pool._in_use_connections)
    await q.close()
    assert len(redis.connection_pool._in_use_connections) == in_use - 1
