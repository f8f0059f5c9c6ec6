"""The Redis queue split into partitions (``ARCANA_QUEUE_PARTITIONS`` > 1).

Each partition is a complete ``RedisJobQueue`` under its own hash tag, so on a Redis Cluster
the partitions sit on different masters and every Lua script still touches one slot. This
class only routes:

- enqueue: by ``unique_key`` when there is one (two jobs with one key always meet in one
  partition, so uniqueness stays exact), else by job id (so an idempotent id such as a
  periodic job's period id always lands in the same partition and is enqueued once);
- fetch: from every partition, starting at the next one on each call, so a busy partition
  cannot starve the others; priority order holds within each partition;
- acknowledgements: to the partition the job was leased from (remembered per leased job,
  looked up when unknown);
- operator views (stats, lists, get, retry): across all partitions; a list merges the
  partitions by what each set is ordered by (see ``_merged``).

Changing the partition count would strand the jobs of the old layout, so a process does not
start while that layout holds jobs to run (``layout.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from arcana.adapters.jobqueue.new_jobs import new_job_id
from arcana.adapters.jobqueue.redis import (
    _ALL_ORDER,
    _NEWEST_FIRST,
    _ZSET_OF,
    BAND,
    RedisJobQueue,
    _s,
)
from arcana.adapters.partitions import partition_of, partition_tags
from arcana.adapters.redis_client import is_cluster
from arcana.domain.jobs import Job, JobQueue, JobRequest, JobStatus, QueueStats
from arcana.errors import NotFound, ServiceUnavailable

T = TypeVar("T")


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise ServiceUnavailable("The job queue is unreachable; try again shortly") from exc


class PartitionedRedisJobQueue(JobQueue):
    def __init__(self, redis: Redis, prefix: str, partitions: int, *, finished_ttl: float) -> None:
        self._redis = redis
        self.parts = [
            RedisJobQueue(redis, tag, finished_ttl=finished_ttl)
            for tag in partition_tags(f"{prefix}:q", partitions)
        ]
        self._cluster = is_cluster(redis)
        self._next = 0
        self._owner: dict[str, int] = {}
        """Leased job id -> its partition, until the job is acknowledged."""

    def partition_for(self, request: JobRequest, job_id: str) -> int:
        return partition_of(request.unique_key or job_id, len(self.parts))

    async def _each(self, call: Callable[[RedisJobQueue], Awaitable[T]]) -> list[T]:
        return list(await asyncio.gather(*(call(p) for p in self.parts)))

    # -- producers ------------------------------------------------------------------------
    async def enqueue(self, request: JobRequest, *, job_id: str | None = None) -> Job:
        job_id = job_id or new_job_id()
        part = self.parts[self.partition_for(request, job_id)]
        return await part.enqueue(request, job_id=job_id)

    async def enqueue_many(self, requests: Sequence[JobRequest]) -> list[Job]:
        groups: dict[int, list[tuple[int, JobRequest, str]]] = defaultdict(list)
        for pos, request in enumerate(requests):
            job_id = new_job_id()
            groups[self.partition_for(request, job_id)].append((pos, request, job_id))
        out: list[Job | None] = [None] * len(requests)

        async def one(index: int, items: list[tuple[int, JobRequest, str]]) -> None:
            jobs = await self.parts[index]._enqueue_all([(r, i) for _, r, i in items])
            for (pos, _, _), job in zip(items, jobs, strict=True):
                out[pos] = job

        await asyncio.gather(*(one(i, items) for i, items in groups.items()))
        return [j for j in out if j is not None]

    # -- reading --------------------------------------------------------------------------
    async def _locate(self, job_id: str) -> int | None:
        known = self._owner.get(job_id)
        if known is not None:
            return known
        with _reachable():
            found = await self._each(lambda p: self._redis.exists(p.base + "j:" + job_id))
        return next((i for i, n in enumerate(found) if int(n)), None)

    async def get(self, job_id: str) -> Job | None:
        index = await self._locate(job_id)
        return None if index is None else await self.parts[index].get(job_id)

    async def list_jobs(
        self, status: JobStatus | None, page: int, size: int
    ) -> tuple[list[Job], int]:
        statuses = [status] if status is not None else _ALL_ORDER
        with _reachable():
            counts = await self._each(lambda p: self._counts(p, statuses))
            total = sum(sum(c) for c in counts)
            start, want = page * size, size
            jobs: list[Job] = []
            for si, st in enumerate(statuses):
                count = sum(c[si] for c in counts)
                if want <= 0:
                    break
                if start >= count:
                    start -= count
                    continue
                merged = await self._merged(st, start + want)
                chunk = merged[start : start + want]
                jobs += chunk
                want -= len(chunk)
                start = 0
        return jobs, total

    async def _merged(self, status: JobStatus, first: int) -> list[Job]:
        """The first ``first`` jobs of ``status`` over all partitions, each partition's own
        order kept and the partitions interleaved by what their scores mean: the due time,
        lease deadline or finish time; for ready jobs priority, then creation time."""
        newest_first = status in _NEWEST_FIRST

        async def head(part: RedisJobQueue) -> list[tuple[tuple[float, float], Job]]:
            key = part.base + _ZSET_OF[status]
            rows: list[Any]
            if newest_first:
                rows = await self._redis.zrevrange(key, 0, first - 1, withscores=True)
            else:
                rows = await self._redis.zrange(key, 0, first - 1, withscores=True)
            scores = {_s(row[0]): float(row[1]) for row in rows}
            found = await part._get_many(list(scores))
            out = []
            for job in found:
                score = scores[job.id]
                if status is JobStatus.QUEUED:
                    sort_key = (score // BAND, job.created_at.timestamp())
                else:
                    sort_key = (-score if newest_first else score, 0.0)
                out.append((sort_key, job))
            return out

        heads = await self._each(head)
        return [job for _, job in heapq.merge(*heads, key=lambda item: item[0])][:first]

    async def _counts(self, part: RedisJobQueue, statuses: list[JobStatus]) -> list[int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for st in statuses:
                pipe.zcard(part.base + _ZSET_OF[st])
            return [int(c) for c in await pipe.execute()]

    async def stats(self) -> QueueStats:
        parts = await self._each(lambda p: p.stats())
        return QueueStats(
            depth={k: sum(s.depth.get(k, 0) for s in parts) for k in parts[0].depth},
            scheduled=sum(s.scheduled for s in parts),
            retrying=sum(s.retrying for s in parts),
            running=sum(s.running for s in parts),
            succeeded=sum(s.succeeded for s in parts),
            dead=sum(s.dead for s in parts),
        )

    async def oldest_ready_at(self) -> datetime | None:
        """The longest-waiting due job over every partition (for metrics)."""
        heads = await self._each(lambda p: p.oldest_ready_at())
        return min((h for h in heads if h is not None), default=None)

    async def retry_dead(self, job_id: str) -> Job:
        index = await self._locate(job_id)
        if index is None:
            raise NotFound(f"job {job_id} not found")
        return await self.parts[index].retry_dead(job_id)

    async def discard_dead(self, job_id: str) -> bool:
        """Delete a dead job; ``False`` if it is missing or not dead."""
        index = await self._locate(job_id)
        return index is not None and await self.parts[index].discard_dead(job_id)

    # -- workers --------------------------------------------------------------------------
    async def fetch(self, worker_id: str, limit: int, lease_seconds: float) -> list[Job]:
        n = len(self.parts)
        first = self._next
        self._next = (self._next + 1) % n
        jobs: list[Job] = []
        for k in range(n):
            if len(jobs) >= limit:
                break
            index = (first + k) % n
            got = await self.parts[index].fetch(worker_id, limit - len(jobs), lease_seconds)
            for job in got:
                self._owner[job.id] = index
            jobs += got
        return jobs

    def _grouped(self, job_ids: Sequence[str]) -> dict[int, list[str]]:
        groups: dict[int, list[str]] = defaultdict(list)
        for job_id in job_ids:
            index = self._owner.get(job_id)
            if index is not None:
                groups[index].append(job_id)
            else:  # not leased by this process: every partition checks the lease itself
                for i in range(len(self.parts)):
                    groups[i].append(job_id)
        return groups

    async def heartbeat(self, worker_id: str, job_ids: Sequence[str], lease_seconds: float) -> None:
        groups = self._grouped(job_ids)
        await asyncio.gather(
            *(self.parts[i].heartbeat(worker_id, ids, lease_seconds) for i, ids in groups.items())
        )

    async def complete(self, worker_id: str, job_ids: Sequence[str]) -> int:
        groups = self._grouped(job_ids)
        done = await asyncio.gather(
            *(self.parts[i].complete(worker_id, ids) for i, ids in groups.items())
        )
        for job_id in job_ids:
            self._owner.pop(job_id, None)
        return sum(done)

    async def fail(
        self, worker_id: str, job_id: str, error: str, retry_delay: float
    ) -> JobStatus | None:
        index = self._owner.pop(job_id, None)
        candidates = [index] if index is not None else range(len(self.parts))
        for i in candidates:
            status = await self.parts[i].fail(worker_id, job_id, error, retry_delay)
            if status is not None:
                return status
        return None

    async def release(self, worker_id: str, job_ids: Sequence[str]) -> int:
        groups = self._grouped(job_ids)
        released = await asyncio.gather(
            *(self.parts[i].release(worker_id, ids) for i, ids in groups.items())
        )
        for job_id in job_ids:
            self._owner.pop(job_id, None)
        return sum(released)

    async def reap(self) -> int:
        return sum(await self._each(lambda p: p.reap()))

    async def wait_for_work(self, timeout: float) -> None:
        """Block until any partition's wake list gets a token, at most until the earliest
        delayed job of any partition is due."""
        dues = [
            (p.next_due_ms - p.last_fetch_ms) / 1000
            for p in self.parts
            if p.next_due_ms >= 0 and p.last_fetch_ms
        ]
        if dues:
            timeout = min(timeout, max(min(dues), 0.005))
        timeout = max(min(timeout, 1.0), 0.01)
        keys = [p.base + "wake" for p in self.parts]
        if not self._cluster:
            await self._redis.blpop(keys, timeout=timeout)
            return
        # BLPOP over several keys needs them in one slot: one waiter per partition, the
        # first token wins. A cancelled waiter may consume a token: only a wake-up hint.
        waiters = [asyncio.ensure_future(self._redis.blpop([k], timeout=timeout)) for k in keys]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def close(self) -> None:
        """The Redis client belongs to the composition root, which closes it; each partition
        gives back what it kept of its pool."""
        for partition in self.parts:
            await partition.close()
