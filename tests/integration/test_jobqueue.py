"""The queue protocol, the same suite against Redis, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from arcana.bootstrap import App
from arcana.config import Settings
from arcana.domain.jobs import Job, JobQueue, JobRequest, JobStatus, Priority, backoff_delay
from arcana.errors import InvalidState, NotFound
from arcana.worker.scheduler import Periodic, period_job_id, run_scheduler
from tests.conftest import wait_for
from tests.jobs_support import QUEUE_BACKENDS, open_container, queue_settings


@pytest.fixture(params=QUEUE_BACKENDS)
def qsettings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return queue_settings(request, request.param, tmp_path, job_poll_interval=0.05)


@pytest.fixture
async def qc(qsettings: Settings) -> AsyncIterator[App]:
    async for c in open_container(qsettings):
        yield c


@pytest.fixture
def queue(qc: App) -> JobQueue:
    return qc.queue


async def test_backend_is_the_one_asked_for(qc: App) -> None:
    name = type(qc.queue).__name__
    expected = "RedisJobQueue" if qc.settings.redis.url else "SqlJobQueue"
    assert name == expected


async def test_priority_order_then_fifo(queue: JobQueue) -> None:
    order = [
        ("low", Priority.LOW),
        ("n1", Priority.NORMAL),
        ("high", Priority.HIGH),
        ("n2", Priority.NORMAL),
        ("crit", Priority.CRITICAL),
        ("n3", Priority.NORMAL),
    ]
    for name, prio in order:
        await queue.enqueue(JobRequest("system.echo", {"message": name}, priority=prio))
    stats = await queue.stats()
    assert stats.depth == {"LOW": 1, "NORMAL": 3, "HIGH": 1, "CRITICAL": 1}
    got: list[str] = []
    while len(got) < len(order):
        batch = await queue.fetch("w1", 2, 30)
        assert batch
        got += [j.payload["message"] for j in batch]
    assert got == ["crit", "high", "n1", "n2", "n3", "low"]
    assert (await queue.stats()).running == 6


async def test_enqueue_many_and_batch_fetch(queue: JobQueue) -> None:
    jobs = await queue.enqueue_many([JobRequest("system.noop", {"i": i}) for i in range(50)])
    assert len({j.id for j in jobs}) == 50
    batch = await queue.fetch("w", 20, 30)
    assert [j.payload["i"] for j in batch] == list(range(20))
    assert all(j.status is JobStatus.RUNNING and j.started_at for j in batch)
    assert await queue.complete("w", [j.id for j in batch]) == 20
    stats = await queue.stats()
    assert (stats.succeeded, stats.running, stats.depth["NORMAL"]) == (20, 0, 30)
    done = await queue.get(batch[0].id)
    assert done is not None
    assert done.status is JobStatus.SUCCEEDED
    assert done.finished_at


async def test_delayed_job_waits_for_its_time(queue: JobQueue) -> None:
    job = await queue.enqueue(JobRequest("system.noop", delay_seconds=0.4))
    assert job.status is JobStatus.SCHEDULED
    assert (job.scheduled_at - job.created_at).total_seconds() == pytest.approx(0.4, abs=0.01)
    assert await queue.fetch("w", 10, 30) == []
    assert (await queue.stats()).scheduled == 1

    async def fetched() -> list[str]:
        return [j.id for j in await queue.fetch("w", 10, 30)]

    assert await wait_for(fetched, timeout=10) == [job.id]


async def test_enqueue_describes_the_job_as_stored(queue: JobQueue) -> None:
    """The ``Job`` an enqueue returns is built from its reply, not read back: it matches what
    ``get`` reads, times included, delayed or not, alone or in a batch, new or already there."""
    requests = [
        JobRequest("system.echo", {"message": "é"}, priority=Priority.HIGH, max_retries=5),
        JobRequest("system.noop", {"n": 1}, delay_seconds=90.5, unique_key="describe"),
        JobRequest("system.noop", {"n": 2}, unique_key="describe"),  # held by the one before
    ]
    single = [await queue.enqueue(r) for r in requests]
    batch = await queue.enqueue_many(requests[:2]) + await queue.enqueue_many(requests[2:])
    assert [j.existing for j in single] == [False, False, True]
    assert [j.existing for j in batch] == [False, True, True]
    assert single[2].id == single[1].id == batch[1].id == batch[2].id
    assert single[1].status is JobStatus.SCHEDULED
    assert single[1].scheduled_at - single[1].created_at == timedelta(seconds=90.5)
    for job in single + batch:
        stored = await queue.get(job.id)
        assert stored is not None
        assert stored.existing is False
        stored.existing = job.existing
        assert stored == job


async def test_a_delay_under_the_stores_resolution_is_described_as_stored(
    queue: JobQueue,
) -> None:
    """Redis keeps due times in whole milliseconds: a 0.4 ms delay is stored due at once, as a
    queued job, and the ``Job`` the enqueue returns says the same (it said scheduled)."""
    for job in [
        await queue.enqueue(JobRequest("system.noop", delay_seconds=0.0004)),
        *await queue.enqueue_many([JobRequest("system.noop", delay_seconds=0.0004)]),
    ]:
        stored = await queue.get(job.id)
        assert stored is not None
        assert (job.status, job.scheduled_at) == (stored.status, stored.scheduled_at)
        assert job.status is (
            JobStatus.SCHEDULED if job.scheduled_at > job.created_at else JobStatus.QUEUED
        )


async def test_failure_retries_with_backoff_then_dead_then_retry_from_dead(
    queue: JobQueue,
) -> None:
    job = await queue.enqueue(JobRequest("system.echo", max_retries=2))
    for attempt in range(1, 3):
        [leased] = await wait_for(lambda: queue.fetch("w", 1, 30), timeout=10)
        assert leased.id == job.id
        assert leased.retry_count == attempt - 1
        assert await queue.fail("w", job.id, f"boom {attempt}", 0.0) is JobStatus.RETRYING
        current = await queue.get(job.id)
        assert current is not None
        assert current.status in (JobStatus.RETRYING, JobStatus.QUEUED)
        assert current.retry_count == attempt
        assert current.last_error == f"boom {attempt}"
    [leased] = await wait_for(lambda: queue.fetch("w", 1, 30), timeout=10)
    assert await queue.fail("w", job.id, "final", 0.0) is JobStatus.DEAD
    dead = await queue.get(job.id)
    assert dead is not None
    assert (dead.status, dead.retry_count, dead.last_error) == (JobStatus.DEAD, 2, "final")
    assert dead.finished_at is not None
    items, total = await queue.list_jobs(JobStatus.DEAD, 0, 10)
    assert total == 1
    assert items[0].id == job.id
    assert (await queue.stats()).dead == 1

    again = await queue.retry_dead(job.id)
    assert again.status is JobStatus.QUEUED
    assert again.retry_count == 3
    with pytest.raises(InvalidState):
        await queue.retry_dead(job.id)
    with pytest.raises(NotFound):
        await queue.retry_dead("no-such-job")
    [leased] = await queue.fetch("w", 1, 30)
    assert leased.retry_count == 3
    # Retries are used up: the next failure goes straight back to the dead-letter set.
    assert await queue.fail("w", job.id, "still", 0.0) is JobStatus.DEAD


async def test_retry_delay_is_applied(queue: JobQueue) -> None:
    job = await queue.enqueue(JobRequest("system.echo"))
    await queue.fetch("w", 1, 30)
    # The retry is due 60 s after the failure was recorded, however long that call took on a
    # busy machine; the second of slack covers clock granularity, not the delay itself.
    before = datetime.now(UTC)
    assert await queue.fail("w", job.id, "x", 60.0) is JobStatus.RETRYING
    after = datetime.now(UTC)
    retrying = await queue.get(job.id)
    assert retrying is not None
    assert retrying.status is JobStatus.RETRYING
    slack = timedelta(seconds=1)
    assert before + timedelta(seconds=60) - slack <= retrying.scheduled_at
    assert retrying.scheduled_at <= after + timedelta(seconds=60) + slack
    assert await queue.fetch("w", 1, 30) == []
    assert (await queue.stats()).retrying == 1


def test_backoff_schedule_is_exponential_capped_with_full_jitter() -> None:
    top = [backoff_delay(n, 1.0, 300.0, lambda: 1.0) for n in range(12)]
    assert top == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    assert backoff_delay(3, 1.0, 300.0, lambda: 0.0) == 0
    assert backoff_delay(3, 1.0, 300.0, lambda: 0.5) == 4
    assert backoff_delay(100, 2.0, 10.0, lambda: 0.25) == 2.5


async def test_unique_key_deduplicates_while_active(queue: JobQueue) -> None:
    first = await queue.enqueue(JobRequest("system.noop", unique_key="k1"))
    dup = await queue.enqueue(JobRequest("system.noop", unique_key="k1"))
    assert dup.existing
    assert dup.id == first.id
    assert not first.existing
    [leased] = await queue.fetch("w", 1, 30)
    assert (await queue.enqueue(JobRequest("system.noop", unique_key="k1"))).id == first.id
    await queue.complete("w", [leased.id])
    fresh = await queue.enqueue(JobRequest("system.noop", unique_key="k1"))
    assert not fresh.existing
    assert fresh.id != first.id


async def test_unique_key_frees_when_dead(queue: JobQueue) -> None:
    job = await queue.enqueue(JobRequest("system.echo", max_retries=0, unique_key="u"))
    await queue.fetch("w", 1, 30)
    assert await queue.fail("w", job.id, "x", 0) is JobStatus.DEAD
    assert not (await queue.enqueue(JobRequest("system.noop", unique_key="u"))).existing


async def test_job_id_makes_enqueue_idempotent(queue: JobQueue) -> None:
    request = JobRequest("system.noop")
    results = await asyncio.gather(
        *(queue.enqueue(request, job_id="outbox-row-1") for _ in range(5))
    )
    assert {j.id for j in results} == {"outbox-row-1"}
    assert sum(not j.existing for j in results) == 1
    assert sum((await queue.stats()).depth.values()) == 1
    [leased] = await queue.fetch("w", 1, 30)
    await queue.complete("w", [leased.id])
    # Still known after it finished: a replay enqueues nothing.
    again = await queue.enqueue(request, job_id="outbox-row-1")
    assert again.existing
    assert again.status is JobStatus.SUCCEEDED
    assert sum((await queue.stats()).depth.values()) == 0


async def test_expired_lease_is_reaped_and_stale_worker_cannot_ack(queue: JobQueue) -> None:
    job = await queue.enqueue(JobRequest("system.noop"))
    await queue.fetch("dead-worker", 1, 0.2)
    assert await wait_for(queue.reap, timeout=10) == 1
    again = await queue.get(job.id)
    assert again is not None
    assert again.status is JobStatus.QUEUED
    [leased] = await queue.fetch("live-worker", 1, 30)
    assert leased.id == job.id
    assert await queue.complete("dead-worker", [job.id]) == 0
    assert await queue.fail("dead-worker", job.id, "late", 0) is None
    assert await queue.complete("live-worker", [job.id]) == 1


async def test_heartbeat_extends_the_lease(queue: JobQueue) -> None:
    await queue.enqueue(JobRequest("system.noop"))
    [leased] = await queue.fetch("w", 1, 0.3)
    await queue.heartbeat("w", [leased.id], 60)
    other = await queue.enqueue(JobRequest("system.noop"))
    await queue.fetch("w2", 1, 0.2)
    await wait_for(queue.reap, timeout=10)  # the short lease of the other job expires
    job = await queue.get(leased.id)
    assert job is not None
    assert job.status is JobStatus.RUNNING
    assert (await queue.get(other.id)).status is JobStatus.QUEUED  # type: ignore[union-attr]


async def test_release_puts_jobs_back_in_their_place(queue: JobQueue) -> None:
    a = await queue.enqueue(JobRequest("system.noop", {"n": "a"}))
    await queue.enqueue(JobRequest("system.noop", {"n": "b"}))
    [first] = await queue.fetch("w", 1, 30)
    assert first.id == a.id
    assert await queue.release("w", [a.id]) == 1
    got = [j.payload["n"] for j in await queue.fetch("w", 2, 30)]
    assert got == ["a", "b"]


async def test_list_by_status_with_paging(queue: JobQueue) -> None:
    await queue.enqueue_many([JobRequest("system.noop", {"i": i}) for i in range(7)])
    await queue.enqueue(JobRequest("system.noop", delay_seconds=600))
    page0, total = await queue.list_jobs(JobStatus.QUEUED, 0, 5)
    page1, _ = await queue.list_jobs(JobStatus.QUEUED, 1, 5)
    assert total == 7
    assert len(page0) == 5
    assert len(page1) == 2
    assert [j.payload["i"] for j in page0 + page1] == list(range(7))
    scheduled, n = await queue.list_jobs(JobStatus.SCHEDULED, 0, 10)
    assert n == 1
    assert scheduled[0].status is JobStatus.SCHEDULED
    everything, n_all = await queue.list_jobs(None, 0, 100)
    assert n_all == 8
    assert len(everything) == 8


async def test_finished_jobs_are_kept_for_the_ttl_then_dropped(qsettings: Settings) -> None:
    settings = qsettings.replace(job_finished_ttl=1)
    if True:
        async for c in open_container(settings):
            job = await c.queue.enqueue(JobRequest("system.noop"))
            [leased] = await c.queue.fetch("w", 1, 30)
            await c.queue.complete("w", [leased.id])
            assert (await c.queue.get(job.id)) is not None

            async def gone(q: JobQueue = c.queue, job_id: str = job.id) -> bool:
                await q.reap()
                return await q.get(job_id) is None

            await wait_for(gone, timeout=10, interval=0.2)


class CountingQueue:
    """The queue, with a count of the enqueue calls made for each job id."""

    def __init__(self, queue: JobQueue) -> None:
        self._queue = queue
        self.calls: Counter[str] = Counter()

    async def enqueue(self, request: JobRequest, *, job_id: str | None = None) -> Job:
        assert job_id is not None  # the scheduler always names a period's job
        self.calls[job_id] += 1
        return await self._queue.enqueue(request, job_id=job_id)


async def test_three_schedulers_enqueue_each_period_once(queue: JobQueue) -> None:
    now = 1_000_000.0
    counting = CountingQueue(queue)
    stop = asyncio.Event()
    schedule = [Periodic("system.noop", 10)]
    tasks = [
        asyncio.create_task(
            run_scheduler(counting, schedule, stop, clock=lambda: now, max_wait=0.01)  # type: ignore[arg-type]
        )
        for _ in range(3)
    ]
    try:
        # The clock moves only here, one period at a time: each period is seen by all three
        # schedulers (three enqueue calls for its job id) before the next one begins.
        for period in range(5):
            now = 1_000_000.0 + period * 10 + 1
            job_id = period_job_id("system.noop", 1_000_000 + period * 10)
            await wait_for(lambda job_id=job_id: counting.calls[job_id] == 3, timeout=10)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    items, total = await queue.list_jobs(None, 0, 100)
    assert total == len(items) == 5  # one job per period, whichever scheduler came first
    assert len({j.id for j in items}) == 5
    assert set(counting.calls) == {j.id for j in items}


async def test_redis_down_is_service_unavailable() -> None:
    from redis.asyncio import Redis

    from arcana.adapters.jobqueue.redis import RedisJobQueue
    from arcana.errors import ServiceUnavailable
    from tests.process import free_port

    redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    queue = RedisJobQueue(redis, "nothing-listens", finished_ttl=60)
    try:
        with pytest.raises(ServiceUnavailable):
            await queue.enqueue(JobRequest("system.noop"))
        with pytest.raises(ServiceUnavailable):
            await queue.stats()
        with pytest.raises(ServiceUnavailable):
            await queue.get("x")
    finally:
        await redis.aclose()
