"""The enqueue's own connection (``script_call``): pipelined callers get their own replies, and
it keeps working when Redis forgot the script, dropped the connection, restarted, stalled or
asks for a password, and its connection closes with the queue."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from arcana.adapters.jobqueue.redis import RedisJobQueue
from arcana.adapters.jobqueue.script_call import _Channel, _plain_tcp
from arcana.adapters.redis_client import connect_redis
from arcana.domain.jobs import Job, JobRequest, JobStatus
from arcana.errors import ServiceUnavailable
from tests.app_support import private_redis
from tests.private_redis import PrivateRedis

__all__ = ["private_redis"]  # a fixture of this module

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def redis(private_redis: PrivateRedis) -> AsyncIterator[Redis]:
    """A server of this test's own: ``SCRIPT FLUSH``, ``CLIENT PAUSE`` and restarts would
    otherwise reach every other user of the shared Redis."""
    client = Redis.from_url(private_redis.url)
    yield client
    await client.aclose()


@pytest.fixture
async def queue(redis: Redis) -> AsyncIterator[RedisJobQueue]:
    q = RedisJobQueue(redis, f"arcana-test-script-{uuid.uuid4().hex[:8]}", finished_ttl=60)
    yield q
    await q.close()


def channel_of(queue: RedisJobQueue) -> _Channel:
    channel = queue._enqueue._channel
    assert channel is not None, "the enqueue opened a connection of its own"
    return channel


def address_of(channel: _Channel) -> str:
    assert channel.transport is not None
    host, port = channel.transport.get_extra_info("sockname")[:2]
    return f"{host}:{port}"


async def client_addresses(redis: Redis) -> set[str]:
    return {c["addr"] for c in await redis.client_list()}


async def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def enqueue_and_find(queue: RedisJobQueue) -> None:
    job = await queue.enqueue(JobRequest("system.echo", {"message": "hi"}))
    stored = await queue.get(job.id)
    assert stored is not None
    assert stored.status == JobStatus.QUEUED


async def test_enqueue_after_redis_forgot_the_script(redis: Redis, queue: RedisJobQueue) -> None:
    await enqueue_and_find(queue)
    await redis.script_flush()  # as after a Redis restart: NOSCRIPT, then loaded again
    await enqueue_and_find(queue)
    assert await redis.script_exists(queue._enqueue._script.sha) == [True]
    await enqueue_and_find(queue)


async def test_enqueue_after_the_kept_connection_was_dropped(
    redis: Redis, queue: RedisJobQueue
) -> None:
    await enqueue_and_find(queue)
    first = channel_of(queue)
    assert await redis.client_kill_filter(addr=address_of(first)) == 1
    await enqueue_and_find(queue)
    await enqueue_and_find(queue)
    assert channel_of(queue).open, "a new connection of its own after the drop"


async def test_enqueue_across_a_redis_restart(
    private_redis: PrivateRedis, redis: Redis, queue: RedisJobQueue
) -> None:
    await enqueue_and_find(queue)
    await asyncio.to_thread(private_redis.stop)
    with pytest.raises(ServiceUnavailable):
        await queue.enqueue(JobRequest("system.echo", {"message": "down"}))
    await asyncio.to_thread(private_redis.start)  # same port, empty, no scripts loaded
    await enqueue_and_find(queue)
    await enqueue_and_find(queue)
    assert channel_of(queue).open


async def test_concurrent_enqueues_share_one_connection_and_get_their_own_replies(
    redis: Redis, queue: RedisJobQueue
) -> None:
    await enqueue_and_find(queue)
    before = await client_addresses(redis)
    ids = [str(uuid.uuid4()) for _ in range(300)]
    jobs = await asyncio.gather(
        *(queue.enqueue(JobRequest("system.echo", {"n": n}), job_id=i) for n, i in enumerate(ids))
    )
    assert [j.id for j in jobs] == ids
    assert [j.payload["n"] for j in jobs] == list(range(300))
    assert not any(j.existing for j in jobs)
    assert await client_addresses(redis) == before, "no connection beyond the one kept"


async def test_a_cancelled_enqueue_leaves_the_connection_in_step(
    redis: Redis, queue: RedisJobQueue
) -> None:
    await enqueue_and_find(queue)
    channel = channel_of(queue)
    sent = channel._sent
    await redis.client_pause(60_000, all=False)  # its reply comes only after the cancel
    try:
        first = asyncio.create_task(
            queue.enqueue(JobRequest("system.echo", {}), job_id="cancelled-" + uuid.uuid4().hex)
        )
        await wait_until(lambda: channel._sent > sent)  # written, its reply still to come
        first.cancel()
        await asyncio.wait([first])
        assert first.cancelled()
    finally:
        await redis.client_unpause()
    mine = "next-" + uuid.uuid4().hex
    job = await queue.enqueue(JobRequest("system.echo", {}), job_id=mine)
    assert job.id == mine
    assert channel_of(queue) is channel
    assert channel.open


async def test_a_stalled_redis_times_out_instead_of_hanging(private_redis: PrivateRedis) -> None:
    client = Redis.from_url(private_redis.url, socket_timeout=0.2)
    admin = Redis.from_url(private_redis.url)
    queue = RedisJobQueue(client, f"arcana-test-script-{uuid.uuid4().hex[:8]}", finished_ttl=60)
    try:
        await enqueue_and_find(queue)
        channel = channel_of(queue)
        await admin.client_pause(60_000, all=False)  # write commands wait, as on a hung server
        with pytest.raises(ServiceUnavailable):
            await queue.enqueue(JobRequest("system.echo", {}))
        assert not channel.open, "the stalled connection was given up"
        await admin.client_unpause()
        await enqueue_and_find(queue)
    finally:
        await admin.client_unpause()
        await queue.close()
        await client.aclose()
        await admin.aclose()


async def test_password_and_database_are_used(private_redis: PrivateRedis) -> None:
    admin = Redis.from_url(private_redis.url)
    await admin.config_set("requirepass", "s3cret")
    url = private_redis.url.replace("redis://", "redis://:s3cret@").rsplit("/", 1)[0] + "/5"
    client = Redis.from_url(url)
    queue = RedisJobQueue(client, f"arcana-test-script-{uuid.uuid4().hex[:8]}", finished_ttl=60)
    try:
        await enqueue_and_find(queue)  # the script loaded (through redis-py) on the way
        await enqueue_and_find(queue)  # over the connection of its own
        assert channel_of(queue).open
        assert await client.zcard(queue.base + "ready") == 2  # both in database 5
    finally:
        await queue.close()
        await client.aclose()
        await admin.aclose()


async def test_close_closes_the_kept_connection(redis: Redis) -> None:
    q = RedisJobQueue(redis, f"arcana-test-script-{uuid.uuid4().hex[:8]}", finished_ttl=60)
    await q.enqueue(JobRequest("system.echo", {"message": "hi"}))
    address = address_of(channel_of(q))
    assert address in await client_addresses(redis)
    await q.close()
    async with asyncio.timeout(10):
        while address in await client_addresses(redis):
            await asyncio.sleep(0.01)


async def test_connections_it_cannot_open_itself_go_through_redis_py() -> None:
    assert _plain_tcp(connect_redis("redis://:pw@127.0.0.1:6379/3")) is not None
    assert _plain_tcp(Redis.from_url("rediss://127.0.0.1:6379/0")) is None
    assert _plain_tcp(Redis.from_url("unix:///tmp/redis.sock")) is None


async def test_the_kept_connection_works_under_uvloop(private_redis: PrivateRedis) -> None:
    """``arcana serve`` runs on uvloop, whose transports are not ``asyncio.Transport``s."""
    import uvloop

    async def scenario() -> tuple[bool, int, int]:
        client = Redis.from_url(private_redis.url)
        q = RedisJobQueue(client, f"arcana-test-script-{uuid.uuid4().hex[:8]}", finished_ttl=60)
        try:
            await enqueue_and_find(q)  # loads the script (through redis-py) on the way
            before = len(await client_addresses(client))
            for _ in range(5):
                await enqueue_and_find(q)
            return channel_of(q).open, before, len(await client_addresses(client))
        finally:
            await q.close()
            await client.aclose()

    is_open, before, after = await asyncio.to_thread(uvloop.run, scenario())
    assert is_open
    assert after == before, "one kept connection, not one per enqueue"


async def test_a_job_pruned_between_the_reply_and_the_read_is_enqueued_afresh(
    redis: Redis, queue: RedisJobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script answers "already there" with the job's id; when that job is gone by the time
    it is read (finished and pruned in between), the enqueue runs again, alone or in a batch."""
    first = await queue.enqueue(JobRequest("system.noop", unique_key="held"))
    real_get = queue.get
    misses: list[str] = []

    async def get_missing_once(job_id: str) -> Job | None:
        if not misses:
            misses.append(job_id)
            return None
        return await real_get(job_id)

    monkeypatch.setattr(queue, "get", get_missing_once)
    again = await queue.enqueue(JobRequest("system.noop", unique_key="held"))
    assert misses == [first.id]
    assert again.existing
    assert again.id == first.id
    misses.clear()
    [in_batch] = await queue.enqueue_many([JobRequest("system.noop", unique_key="held")])
    assert misses == [first.id]
    assert in_batch.existing
    assert in_batch.id == first.id


async def test_the_trace_context_is_stored_through_the_kept_connection(
    queue: RedisJobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unsampled trace is not recorded, so the enqueue takes our own connection, and the
    job still keeps the trace context it was enqueued under (packed with its arguments)."""
    from arcana import tracing

    traceparent = f"00-{'a1' * 16}-{'b2' * 8}-00"
    monkeypatch.setattr(tracing, "current_traceparent", lambda: traceparent)
    job = await queue.enqueue(JobRequest("system.noop"))
    [batched] = await queue.enqueue_many([JobRequest("system.noop")])
    assert channel_of(queue).open
    for job_id in (job.id, batched.id):
        stored = await queue.get(job_id)
        assert stored is not None
        assert stored.trace_context == traceparent
