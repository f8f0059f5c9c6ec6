"""The Redis queue's partition count, recorded in Redis and checked when a process starts
(``partition_layout.py`` says why)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from arcana.adapters.jobqueue.partitioned import PartitionedRedisJobQueue
from arcana.adapters.jobqueue.redis import RedisJobQueue
from arcana.adapters.partition_layout import Layout, check_layout
from arcana.domain.jobs import JobQueue


def queue_layout(redis: Redis, prefix: str) -> Layout:
    return Layout(
        name="queue",
        key=f"{prefix}:queue-layout",
        setting="ARCANA_QUEUE_PARTITIONS",
        waiting="job(s) still to run",
        drained_when="`arcana jobs stats` shows none queued, scheduled, retrying or running",
        dead="dead job(s)",
        runs_with="the workers",
        left_behind=_left_behind_under(redis, prefix),
    )


def redis_queue(redis: Redis, prefix: str, partitions: int, *, finished_ttl: float) -> JobQueue:
    """The Redis queue with ``partitions`` partitions (one: the historical keys)."""
    if partitions > 1:
        return PartitionedRedisJobQueue(redis, prefix, partitions, finished_ttl=finished_ttl)
    return RedisJobQueue(redis, prefix, finished_ttl=finished_ttl)


async def left_behind(queue: JobQueue) -> tuple[int, int]:
    """Jobs still to run (queued, delayed, retrying, running), and dead jobs."""
    s = await queue.stats()
    return sum(s.depth.values()) + s.scheduled + s.retrying + s.running, s.dead


def _left_behind_under(redis: Redis, prefix: str) -> Callable[[int], Awaitable[tuple[int, int]]]:
    async def under(partitions: int) -> tuple[int, int]:
        old = redis_queue(redis, prefix, partitions, finished_ttl=1.0)  # read only: stats
        try:
            return await left_behind(old)
        finally:
            await old.close()

    return under


async def check_queue_layout(redis: Redis, prefix: str, partitions: int) -> None:
    """Record ``partitions`` as the queue's layout, unless another recorded layout still holds
    jobs to run (then raise ``LayoutChanged``, saying how to drain it)."""
    await check_layout(redis, queue_layout(redis, prefix), partitions)
