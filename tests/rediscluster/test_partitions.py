"""``ARCANA_QUEUE_PARTITIONS=3`` on a single Redis and on the cluster: the queue protocol tests
that do not assume one global order, plus what partitioning itself promises."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.crc import key_slot

from arcana.adapters.database import Database
from arcana.adapters.events import EventBus
from arcana.adapters.jobqueue.partitioned import PartitionedRedisJobQueue
from arcana.adapters.redis_client import connect_redis
from arcana.config import Settings
from arcana.domain.jobs import JobQueue, JobRequest, JobStatus, Priority
from arcana.services.events import EventHandlers
from tests.conftest import base_settings
from tests.integration.test_jobqueue import (
    qc,
    queue,
    test_delayed_job_waits_for_its_time,
    test_expired_lease_is_reaped_and_stale_worker_cannot_ack,
    test_failure_retries_with_backoff_then_dead_then_retry_from_dead,
    test_heartbeat_extends_the_lease,
    test_job_id_makes_enqueue_idempotent,
    test_three_schedulers_enqueue_each_period_once,
    test_unique_key_deduplicates_while_active,
    test_unique_key_frees_when_dead,
)
from tests.jobs_support import queue_settings
from tests.rediscluster.cluster import LocalCluster

__all__ = [
    "qc",
    "queue",
    "test_delayed_job_waits_for_its_time",
    "test_expired_lease_is_reaped_and_stale_worker_cannot_ack",
    "test_failure_retries_with_backoff_then_dead_then_retry_from_dead",
    "test_heartbeat_extends_the_lease",
    "test_job_id_makes_enqueue_idempotent",
    "test_three_schedulers_enqueue_each_period_once",
    "test_unique_key_deduplicates_while_active",
    "test_unique_key_frees_when_dead",
]


@pytest.fixture(params=["redis", "rediscluster"])
def qsettings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return queue_settings(
        request, request.param, tmp_path, job_poll_interval=0.05, queue_partitions=3
    )


def parts(queue: JobQueue) -> PartitionedRedisJobQueue:
    assert isinstance(queue, PartitionedRedisJobQueue)
    return queue


async def test_jobs_spread_over_every_partition(queue: JobQueue) -> None:
    jobs = await queue.enqueue_many([JobRequest("system.noop") for _ in range(60)])
    assert len({j.id for j in jobs}) == 60
    q = parts(queue)
    per_part = [int(await q._redis.zcard(p.base + "ready")) for p in q.parts]
    assert sum(per_part) == 60
    assert all(n > 0 for n in per_part), per_part
    assert (await queue.stats()).depth["NORMAL"] == 60


async def test_partitions_sit_on_different_masters(redis_cluster: LocalCluster) -> None:
    redis = connect_redis(redis_cluster.url)
    try:
        queue = PartitionedRedisJobQueue(redis, "placement", 3, finished_ttl=60)
        slots = [key_slot(p.base.encode()) for p in queue.parts]
        assert len({redis_cluster.master_of_slot(s).port for s in slots}) == 3
        events = EventBus(
            base_settings(redis_url=redis_cluster.url, events_partitions=3),
            Database(base_settings()),
            redis,
            EventHandlers(),
            None,
        )
        slots = [key_slot(s.encode()) for s in events.streams]
        assert len({redis_cluster.master_of_slot(s).port for s in slots}) == 3
    finally:
        await redis.aclose()


async def test_one_unique_key_meets_in_one_partition(queue: JobQueue) -> None:
    results = await asyncio.gather(
        *(queue.enqueue(JobRequest("system.noop", unique_key="only-one")) for _ in range(12))
    )
    assert len({j.id for j in results}) == 1
    assert sum(1 for j in results if not j.existing) == 1


async def test_no_partition_is_starved(queue: JobQueue) -> None:
    """Three single-job fetches take one job from each partition, even when one partition
    holds far more (and more urgent) work than the others."""
    q = parts(queue)
    crowded = q.parts[0]
    await crowded.enqueue_many([JobRequest("system.noop", priority=Priority.CRITICAL)] * 30)
    for p in q.parts[1:]:
        await p.enqueue(JobRequest("system.noop", priority=Priority.LOW))
    seen = set()
    for _ in range(3):
        (job,) = await queue.fetch("w", 1, 30)
        seen.add(q._owner[job.id])
    assert seen == {0, 1, 2}


async def test_priority_first_within_a_partition(queue: JobQueue) -> None:
    q = parts(queue)
    target = q.parts[1]
    low = await target.enqueue(JobRequest("system.noop", priority=Priority.LOW))
    high = await target.enqueue(JobRequest("system.noop", priority=Priority.HIGH))
    jobs = await queue.fetch("w", 10, 30)
    assert [j.id for j in jobs] == [high.id, low.id]
    assert await queue.complete("w", [high.id, low.id]) == 2
    assert (await queue.get(low.id)).status is JobStatus.SUCCEEDED  # type: ignore[union-attr]


async def test_a_worker_waiting_on_every_partition_wakes_for_any(queue: JobQueue) -> None:
    q = parts(queue)
    await queue.fetch("w", 10, 30)  # empty: the next wait is not cut short by a due job
    for p in q.parts:
        await q._redis.delete(p.base + "wake")
    waiter = asyncio.create_task(queue.wait_for_work(5.0))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await q.parts[2].enqueue(JobRequest("system.noop"))
    await asyncio.wait_for(waiter, 2.0)


async def test_lists_page_across_partitions(queue: JobQueue) -> None:
    """Pages cover every job once; jobs enqueued in one millisecond in different partitions
    have no order between them, so the merged order is by creation time only."""
    jobs = await queue.enqueue_many([JobRequest("system.noop", {"i": i}) for i in range(7)])
    await queue.enqueue(JobRequest("system.noop", delay_seconds=600))
    page0, total = await queue.list_jobs(JobStatus.QUEUED, 0, 5)
    page1, _ = await queue.list_jobs(JobStatus.QUEUED, 1, 5)
    assert total == 7
    assert (len(page0), len(page1)) == (5, 2)
    listed = page0 + page1
    assert sorted(j.id for j in listed) == sorted(j.id for j in jobs)
    created = [j.created_at for j in listed]
    assert created == sorted(created)
    everything, n_all = await queue.list_jobs(None, 0, 100)
    assert n_all == 8
    assert len(everything) == 8
    assert everything[-1].status is JobStatus.SCHEDULED
