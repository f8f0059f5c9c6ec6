"""The Redis queue's partition count, recorded in Redis and checked when a process starts
(``partition_layout.py`` says why), and the queue a command sees when its count is not the
recorded one (``RecordedLayoutWrites``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from redis.asyncio import Redis

from arcana.adapters.jobqueue.partitioned import PartitionedRedisJobQueue
from arcana.adapters.jobqueue.redis import RedisJobQueue
from arcana.adapters.partition_layout import Layout, check_layout
from arcana.domain.jobs import Job, JobQueue, JobRequest, JobStatus, QueueStats
from arcana.errors import InvalidState, NotFound


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
        writes="jobs it enqueues or retries go to the recorded layout",
    )


RedisQueue = RedisJobQueue | PartitionedRedisJobQueue


def redis_queue(redis: Redis, prefix: str, partitions: int, *, finished_ttl: float) -> RedisQueue:
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


class RecordedLayoutWrites(JobQueue):
    """The queue of a command (not ``serve`` or ``worker``) whose ``ARCANA_QUEUE_PARTITIONS``
    differs from the recorded count. It reads what is stored under its own count: that is how
    an operator lists the dead jobs an old layout kept. New work goes where the workers look,
    to the recorded layout: an enqueue, and a dead job retried, which moves there (same id,
    type, payload, priority, retries allowed and unique key; its attempts start over).

    Without this, a job enqueued or retried by such a command went to a layout that no worker
    runs, and a worker with that count could not start while the recorded layout held work.

    ``stored`` is the process's own queue, closed by its owner; ``close`` closes
    ``recorded``."""

    def __init__(self, stored: RedisQueue, recorded: RedisQueue) -> None:
        self.stored = stored
        self.recorded = recorded

    async def enqueue(self, request: JobRequest, *, job_id: str | None = None) -> Job:
        return await self.recorded.enqueue(request, job_id=job_id)

    async def enqueue_many(self, requests: Sequence[JobRequest]) -> list[Job]:
        return await self.recorded.enqueue_many(requests)

    async def retry_dead(self, job_id: str) -> Job:
        """A dead job stored under this count moves to the recorded layout: enqueued there
        first, under its own id, then deleted here. A failure in between leaves it in both
        places, and the next retry finds it already enqueued (the id is taken) and finishes
        the move: it is not lost, and is not enqueued a second time while the first copy is
        kept (``finished_ttl``). Any other job is retried where it is (the recorded layout
        when it is not stored here), with the usual errors."""
        job = await self.stored.get(job_id)
        if job is None:
            return await self.recorded.retry_dead(job_id)
        if job.status is not JobStatus.DEAD:
            raise InvalidState(f"job {job_id} is {job.status.value}; only dead jobs can be retried")
        request = JobRequest(
            job_type=job.job_type,
            payload=job.payload,
            priority=job.priority,
            max_retries=job.max_retries,
            unique_key=job.unique_key,
        )
        moved = await self.recorded.enqueue(request, job_id=job_id)
        if moved.id != job_id:
            raise InvalidState(
                f"job {job_id} cannot move to the recorded layout: its unique key is held by "
                f"active job {moved.id} there; retry it once that job has finished"
            )
        if not await self.stored.discard_dead(job_id):
            raise NotFound(f"job {job_id} not found")  # another retry moved it meanwhile
        moved.existing = False
        return moved

    async def get(self, job_id: str) -> Job | None:
        return await self.stored.get(job_id)

    async def list_jobs(
        self, status: JobStatus | None, page: int, size: int
    ) -> tuple[list[Job], int]:
        return await self.stored.list_jobs(status, page, size)

    async def stats(self) -> QueueStats:
        return await self.stored.stats()

    # A command runs no worker; these are here for the protocol, on the stored layout.
    async def fetch(self, worker_id: str, limit: int, lease_seconds: float) -> list[Job]:
        return await self.stored.fetch(worker_id, limit, lease_seconds)

    async def heartbeat(self, worker_id: str, job_ids: Sequence[str], lease_seconds: float) -> None:
        await self.stored.heartbeat(worker_id, job_ids, lease_seconds)

    async def complete(self, worker_id: str, job_ids: Sequence[str]) -> int:
        return await self.stored.complete(worker_id, job_ids)

    async def fail(
        self, worker_id: str, job_id: str, error: str, retry_delay: float
    ) -> JobStatus | None:
        return await self.stored.fail(worker_id, job_id, error, retry_delay)

    async def release(self, worker_id: str, job_ids: Sequence[str]) -> int:
        return await self.stored.release(worker_id, job_ids)

    async def reap(self) -> int:
        return await self.stored.reap()

    async def wait_for_work(self, timeout: float) -> None:
        await self.stored.wait_for_work(timeout)

    async def close(self) -> None:
        await self.recorded.close()
