"""The job queue on Redis: our own protocol of Lua scripts over hashes and sorted sets.

See ``redis_scripts`` for the key layout. Enqueue, fetch, heartbeat, complete, fail, release,
reap and retry are each one atomic script call; ``enqueue_many`` and ``complete`` batch many
jobs into one call, and ``fetch`` leases up to ``limit`` jobs in one round trip.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from arcana import tracing
from arcana.adapters.jobqueue import redis_scripts as lua
from arcana.adapters.jobqueue.new_jobs import new_job, new_job_id
from arcana.adapters.jobqueue.script_call import BULK_HEAD, BULK_INT, Arg, ScriptCall
from arcana.domain.jobs import Job, JobQueue, JobRequest, JobStatus, Priority, QueueStats
from arcana.errors import InvalidState, NotFound, ServiceUnavailable

log = logging.getLogger(__name__)

BAND = 1099511627776
_ZSET_OF = {
    JobStatus.QUEUED: "ready",
    JobStatus.SCHEDULED: "scheduled",
    JobStatus.RETRYING: "retrying",
    JobStatus.RUNNING: "running",
    JobStatus.SUCCEEDED: "done",
    JobStatus.DEAD: "dead",
}
# Listing order when no status is given: what needs attention first.
_ALL_ORDER = [
    JobStatus.RUNNING,
    JobStatus.QUEUED,
    JobStatus.RETRYING,
    JobStatus.SCHEDULED,
    JobStatus.DEAD,
    JobStatus.SUCCEEDED,
]
_NEWEST_FIRST = {JobStatus.SUCCEEDED, JobStatus.DEAD}


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(value: Any) -> datetime | None:
    text = _s(value) if value is not None else ""
    if not text:
        return None
    return datetime.fromtimestamp(int(float(text)) / 1000, UTC)


def _trace_context() -> bytes:
    return (tracing.current_traceparent() or "").encode()


def _job_args(
    request: JobRequest, job_id: str, trace_context: bytes
) -> tuple[tuple[Arg, ...], bytes, int]:
    """One job's eight ``ENQUEUE`` arguments: as values (for redis-py's call, see
    ``ScriptCall``), packed as the protocol's bulk strings (for our own connection), and the
    delay in ms that was sent."""
    jid = job_id.encode()
    typ = request.job_type.encode()
    payload = orjson.dumps(request.payload)
    priority = int(request.priority)
    delay_ms = int(max(request.delay_seconds, 0.0) * 1000)
    uk = (request.unique_key or "").encode()
    packed = b"".join((
        BULK_HEAD[len(jid)], jid, b"\r\n",
        BULK_HEAD[len(typ)], typ, b"\r\n",
        BULK_HEAD[len(payload)], payload, b"\r\n",
        BULK_INT[priority],
        BULK_INT[request.max_retries],
        BULK_INT[delay_ms],
        BULK_HEAD[len(uk)], uk, b"\r\n",
        BULK_HEAD[len(trace_context)], trace_context, b"\r\n",
    ))  # fmt: skip
    args = (jid, typ, payload, priority, request.max_retries, delay_ms, uk, trace_context)
    return args, packed, delay_ms


def _created(request: JobRequest, job_id: str, created_ms: int, delay_ms: int) -> Job:
    """The job an enqueue created at ``created_ms`` (the script's reply): due ``delay_ms``
    later, as the script stored it."""
    created_at = datetime.fromtimestamp(created_ms / 1000, UTC)
    scheduled_at = (
        datetime.fromtimestamp((created_ms + delay_ms) / 1000, UTC) if delay_ms else created_at
    )
    return new_job(request, job_id, created_at, scheduled_at=scheduled_at)


_UNREACHABLE = "The job queue is unreachable; try again shortly"


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    """Operator reads and writes answer 503 rather than 500 while Redis is down."""
    try:
        yield
    except RedisError as exc:
        raise ServiceUnavailable(_UNREACHABLE) from exc


class RedisJobQueue(JobQueue):
    def __init__(self, redis: Redis, prefix: str, *, finished_ttl: float) -> None:
        self._redis = redis
        self.base = f"{{{prefix}}}:q:"
        # Every script declares the queue's fixed keys (all under one hash tag), so a Redis
        # Cluster client routes the call to the slot that holds them. Job hashes reached
        # through the sets (``j:<id>`` of a popped or expired id) cannot be known before the
        # call; the script builds them from ``base``, under the same tag, so the same slot.
        self._route = [self.base + k for k in lua.FIXED_KEYS]
        self._ttl_ms = int(finished_ttl * 1000)
        r = redis.register_script
        self._enqueue = ScriptCall(redis, r(lua.ENQUEUE), self._route, [self.base])
        self._fetch = r(lua.FETCH)
        self._heartbeat = r(lua.HEARTBEAT)
        self._complete = r(lua.COMPLETE)
        self._fail = r(lua.FAIL)
        self._release = r(lua.RELEASE)
        self._reap = r(lua.REAP)
        self._retry = r(lua.RETRY_DEAD)
        self._discard = r(lua.DISCARD_DEAD)

    # -- producers ------------------------------------------------------------------------
    # A single awaited enqueue is the everyday call (a service's outbox relay, an API request),
    # so it has a path of its own without the batch's lists and loops: the same helpers, one
    # round trip, the Job built from the reply.
    async def enqueue(self, request: JobRequest, *, job_id: str | None = None) -> Job:
        job_id = job_id or new_job_id()
        args, packed, delay_ms = _job_args(request, job_id, _trace_context())
        try:
            [row] = await self._enqueue(args, packed)
        except RedisError as exc:
            raise ServiceUnavailable(_UNREACHABLE) from exc
        if row.__class__ is int:
            return _created(request, job_id, row, delay_ms)
        existing = await self._existing(row)
        if existing is None:
            return await self.enqueue(request, job_id=job_id)
        return existing

    async def enqueue_many(self, requests: Sequence[JobRequest]) -> list[Job]:
        if not requests:
            return []
        return await self._enqueue_all([(r, new_job_id()) for r in requests])

    async def _enqueue_all(self, items: list[tuple[JobRequest, str]]) -> list[Job]:
        trace_context = _trace_context()
        args: list[Arg] = []
        packed: list[bytes] = []
        delays: list[int] = []
        for request, job_id in items:
            job_args, job_packed, delay_ms = _job_args(request, job_id, trace_context)
            args += job_args
            packed.append(job_packed)
            delays.append(delay_ms)
        try:
            rows = await self._enqueue(args, b"".join(packed))
        except RedisError as exc:
            raise ServiceUnavailable(_UNREACHABLE) from exc
        jobs: list[Job] = []
        for (request, job_id), delay_ms, row in zip(items, delays, rows, strict=True):
            if row.__class__ is int:
                jobs.append(_created(request, job_id, row, delay_ms))
                continue
            existing = await self._existing(row)
            if existing is None:
                return await self._enqueue_all(items)
            jobs.append(existing)
        return jobs

    async def _existing(self, job_id: Any) -> Job | None:
        """The job already there (same id, or holding the unique key) that an enqueue answered
        with; ``None`` if it finished and was pruned in between (then enqueue afresh)."""
        existing = await self.get(_s(job_id))
        if existing is not None:
            existing.existing = True
        return existing

    # -- reading --------------------------------------------------------------------------
    async def get(self, job_id: str) -> Job | None:
        with _reachable():
            data = await self._redis.hgetall(self.base + "j:" + job_id)
        return self._decode(data) if data else None

    async def _get_many(self, ids: Sequence[str]) -> list[Job]:
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(self.base + "j:" + job_id)
            rows = await pipe.execute()
        return [self._decode(d) for d in rows if d]

    @staticmethod
    def _decode(data: dict[Any, Any]) -> Job:
        d = {_s(k): _s(v) for k, v in data.items()}
        created = _ms(d.get("created"))
        scheduled = _ms(d.get("sched")) or created
        assert created is not None
        assert scheduled is not None
        return Job(
            id=d["id"],
            job_type=d["type"],
            payload=orjson.loads(d.get("payload") or "{}"),
            priority=Priority(int(d.get("pri", "1"))),
            max_retries=int(d.get("max", "3")),
            retry_count=int(d.get("retries", "0")),
            status=JobStatus(d["status"]),
            created_at=created,
            scheduled_at=scheduled,
            started_at=_ms(d.get("started")),
            finished_at=_ms(d.get("finished")),
            last_error=d.get("error") or None,
            unique_key=d.get("uk") or None,
            trace_context=d.get("tc") or None,
        )

    async def _list_jobs(
        self, status: JobStatus | None, page: int, size: int
    ) -> tuple[list[Job], int]:
        statuses = [status] if status is not None else _ALL_ORDER
        async with self._redis.pipeline(transaction=False) as pipe:
            for st in statuses:
                pipe.zcard(self.base + _ZSET_OF[st])
            counts = [int(c) for c in await pipe.execute()]
        total = sum(counts)
        start, want = page * size, size
        ids: list[str] = []
        for st, count in zip(statuses, counts, strict=True):
            if want <= 0:
                break
            if start >= count:
                start -= count
                continue
            key = self.base + _ZSET_OF[st]
            stop = start + want - 1
            if st in _NEWEST_FIRST:
                chunk = await self._redis.zrevrange(key, start, stop)
            else:
                chunk = await self._redis.zrange(key, start, stop)
            ids += [_s(i) for i in chunk]
            want -= len(chunk)
            start = 0
        return await self._get_many(ids), total

    async def _stats(self) -> QueueStats:
        b = self.base
        async with self._redis.pipeline(transaction=False) as pipe:
            for p in Priority:
                low = (3 - int(p)) * BAND
                pipe.zcount(b + "ready", low, f"({low + BAND}")
            for name in ("scheduled", "retrying", "running", "done", "dead"):
                pipe.zcard(b + name)
            r = [int(x) for x in await pipe.execute()]
        return QueueStats(
            depth={p.name: r[i] for i, p in enumerate(Priority)},
            scheduled=r[4],
            retrying=r[5],
            running=r[6],
            succeeded=r[7],
            dead=r[8],
        )

    async def oldest_ready_at(self) -> datetime | None:
        """When the job that has waited longest to run became due (for metrics): the head of
        each priority band is its oldest (bands are FIFO), so four look-ups suffice."""
        b = self.base
        async with self._redis.pipeline(transaction=False) as pipe:
            for p in Priority:
                low = (3 - int(p)) * BAND
                pipe.zrangebyscore(b + "ready", low, f"({low + BAND}", start=0, num=1)
            heads = [_s(ids[0]) for ids in await pipe.execute() if ids]
        if not heads:
            return None
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in heads:
                pipe.hget(b + "j:" + job_id, "sched")
            due = [_ms(v) for v in await pipe.execute() if v is not None]
        return min((d for d in due if d is not None), default=None)

    async def _retry_dead(self, job_id: str) -> Job:
        result = _s(await self._retry(keys=self._route, args=[self.base, job_id]))
        if result == "missing":
            raise NotFound(f"job {job_id} not found")
        if result != "ok":
            raise InvalidState(f"job {job_id} is {result}; only dead jobs can be retried")
        job = await self.get(job_id)
        if job is None:  # pragma: no cover - it was just queued
            raise NotFound(f"job {job_id} not found")
        return job

    async def list_jobs(
        self, status: JobStatus | None, page: int, size: int
    ) -> tuple[list[Job], int]:
        with _reachable():
            return await self._list_jobs(status, page, size)

    async def stats(self) -> QueueStats:
        with _reachable():
            return await self._stats()

    async def retry_dead(self, job_id: str) -> Job:
        with _reachable():
            return await self._retry_dead(job_id)

    async def discard_dead(self, job_id: str) -> bool:
        """Delete a dead job; ``False`` if it is missing or not dead."""
        with _reachable():
            return bool(await self._discard(keys=self._route, args=[self.base, job_id]))

    # -- workers --------------------------------------------------------------------------
    async def fetch(self, worker_id: str, limit: int, lease_seconds: float) -> list[Job]:
        out = await self._fetch(
            keys=self._route, args=[self.base, worker_id, limit, int(lease_seconds * 1000)]
        )
        now = _ms(out[0])
        self.next_due_ms = int(out[1])
        jobs: list[Job] = []
        for i in range(2, len(out), 10):
            typ, payload, pri, mx, retries, created, sched, uk, tc = out[i + 1 : i + 10]
            created_at = _ms(created)
            assert created_at is not None
            jobs.append(
                Job(
                    id=_s(out[i]),
                    job_type=_s(typ),
                    payload=orjson.loads(payload),
                    priority=Priority(int(pri)),
                    max_retries=int(mx),
                    retry_count=int(retries),
                    status=JobStatus.RUNNING,
                    created_at=created_at,
                    scheduled_at=_ms(sched) or created_at,
                    started_at=now,
                    unique_key=_s(uk) or None,
                    trace_context=_s(tc) or None,
                )
            )
        self.last_fetch_ms = int(out[0])
        return jobs

    next_due_ms: int = -1
    last_fetch_ms: int = 0

    async def heartbeat(self, worker_id: str, job_ids: Sequence[str], lease_seconds: float) -> None:
        if job_ids:
            await self._heartbeat(
                keys=self._route, args=[self.base, worker_id, int(lease_seconds * 1000), *job_ids]
            )

    async def complete(self, worker_id: str, job_ids: Sequence[str]) -> int:
        if not job_ids:
            return 0
        return int(await self._complete(keys=self._route, args=[self.base, worker_id, *job_ids]))

    async def fail(
        self, worker_id: str, job_id: str, error: str, retry_delay: float
    ) -> JobStatus | None:
        result = _s(
            await self._fail(
                keys=self._route,
                args=[self.base, worker_id, job_id, error[:2000], int(retry_delay * 1000)],
            )
        )
        return JobStatus(result) if result else None

    async def release(self, worker_id: str, job_ids: Sequence[str]) -> int:
        if not job_ids:
            return 0
        return int(await self._release(keys=self._route, args=[self.base, worker_id, *job_ids]))

    async def reap(self) -> int:
        return int(await self._reap(keys=self._route, args=[self.base, self._ttl_ms, 1000]))

    async def wait_for_work(self, timeout: float) -> None:
        """Block on the wake list (one token per enqueue), at most until the next delayed job
        is due."""
        if self.next_due_ms >= 0 and self.last_fetch_ms:
            timeout = min(timeout, max((self.next_due_ms - self.last_fetch_ms) / 1000, 0.005))
        timeout = max(min(timeout, 1.0), 0.01)
        await self._redis.blpop([self.base + "wake"], timeout=timeout)

    async def close(self) -> None:
        """The Redis client belongs to the composition root, which closes it; the connections
        kept for enqueueing go back to its pool."""
        await self._enqueue.close()
