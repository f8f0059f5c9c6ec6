"""The Redis queue's partition count, recorded in Redis and checked when a process starts.

Where a job's keys live depends on ``ARCANA_QUEUE_PARTITIONS`` (``adapters/partitions.py``). A
process started with another count than the one the queue's jobs were written under would not
see those jobs: they would wait, unseen, until the old count came back. So the count in use is
recorded (``<prefix>:queue-layout``), and a process whose count differs from the recorded one
refuses to start while the recorded layout still holds jobs waiting or running (queued,
delayed, retrying, running). Once none are left, the new count is recorded and the process
starts; dead jobs left under the old layout are logged (they stay readable and retryable with
the old count), not waited for, since a dead job that fails again on retry would never drain.

Before the count was recorded, only the historical layout (one partition) could hold jobs
unless someone had changed the count already, so an unrecorded queue is checked as one
partition.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arcana.adapters.jobqueue.partitioned import PartitionedRedisJobQueue
from arcana.adapters.jobqueue.redis import RedisJobQueue
from arcana.domain.jobs import JobQueue

FIELD = "partitions"

log = logging.getLogger("arcana.jobs")


class QueueLayoutChanged(RuntimeError):
    """The configured partition count differs from the recorded one, whose layout still
    holds jobs."""


def layout_key(prefix: str) -> str:
    return f"{prefix}:queue-layout"


def redis_queue(redis: Redis, prefix: str, partitions: int, *, finished_ttl: float) -> JobQueue:
    """The Redis queue with ``partitions`` partitions (one: the historical keys)."""
    if partitions > 1:
        return PartitionedRedisJobQueue(redis, prefix, partitions, finished_ttl=finished_ttl)
    return RedisJobQueue(redis, prefix, finished_ttl=finished_ttl)


async def left_behind(queue: JobQueue) -> tuple[int, int]:
    """Jobs still to run (queued, delayed, retrying, running), and dead jobs."""
    s = await queue.stats()
    return sum(s.depth.values()) + s.scheduled + s.retrying + s.running, s.dead


async def check_queue_layout(redis: Redis, prefix: str, partitions: int) -> None:
    """Record ``partitions`` as the queue's layout, unless another recorded layout still holds
    jobs (then raise ``QueueLayoutChanged``, saying how to drain it)."""
    key = layout_key(prefix)
    raw = await redis.hget(key, FIELD)
    recorded = int(raw) if raw is not None else 1
    if recorded != partitions:
        old = redis_queue(redis, prefix, recorded, finished_ttl=1.0)  # read only: stats
        try:
            waiting, dead = await left_behind(old)
        finally:
            await old.close()
        if waiting:
            raise QueueLayoutChanged(
                f"ARCANA_QUEUE_PARTITIONS is {partitions}, but {waiting} job(s) still to run "
                f"are stored under {recorded} partition(s), where a process with {partitions} "
                f"would not see them. Run the workers with ARCANA_QUEUE_PARTITIONS={recorded} "
                f"until `arcana jobs stats` shows none queued, scheduled, retrying or running, "
                f"then change it."
            )
        if dead:
            log.warning(
                "%d dead job(s) stay under the old layout of %d partition(s); "
                "`arcana jobs dead` lists them with ARCANA_QUEUE_PARTITIONS=%d",
                dead,
                recorded,
                recorded,
            )
    if raw is None or recorded != partitions:
        await redis.hset(key, FIELD, str(partitions))


async def check_queue_layout_at_start(redis: Redis, prefix: str, partitions: int) -> None:
    """``check_queue_layout`` when a process starts. The service starts while Redis is down
    (reads, logins and writes go on; jobs wait in the outbox), so an unreachable Redis skips
    the check with a warning instead of stopping the start; the next start checks again."""
    try:
        await check_queue_layout(redis, prefix, partitions)
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        log.warning(
            "queue layout not checked: Redis unreachable at start-up (%s); "
            "ARCANA_QUEUE_PARTITIONS=%d is used as configured",
            exc,
            partitions,
        )
