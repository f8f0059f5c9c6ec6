"""The job queue on the SQL database: SQLite in embedded mode, PostgreSQL without Redis.

Same semantics as the Redis queue. Workers lease rows with one ``UPDATE … WHERE seq IN
(SELECT … FOR UPDATE SKIP LOCKED) RETURNING`` (PostgreSQL; SQLite serializes writers, so the
plain statement is atomic there). On PostgreSQL, enqueues ``NOTIFY arcana_jobs`` and idle
workers ``LISTEN``; on SQLite an in-process event wakes workers of the same process, and other
processes poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, literal, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from arcana import tracing
from arcana.adapters.database import Database, is_connectivity_error
from arcana.adapters.jobqueue.new_jobs import new_job, new_job_id
from arcana.adapters.tables import jobs
from arcana.domain.jobs import Job, JobQueue, JobRequest, JobStatus, Priority, QueueStats
from arcana.domain.timestamps import utcnow
from arcana.errors import InvalidState, NotFound, ServiceUnavailable

log = logging.getLogger(__name__)

CHANNEL = "arcana_jobs"
_WAITING = (JobStatus.QUEUED.value, JobStatus.SCHEDULED.value, JobStatus.RETRYING.value)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _job(row: Row[Any]) -> Job:
    m = row._mapping
    created = _utc(m["created_at"])
    scheduled = _utc(m["scheduled_at"])
    assert created is not None
    assert scheduled is not None
    return Job(
        id=m["id"],
        job_type=m["job_type"],
        payload=dict(m["payload"] or {}),
        priority=Priority(m["priority"]),
        max_retries=m["max_retries"],
        retry_count=m["retry_count"],
        status=JobStatus(m["status"]),
        created_at=created,
        scheduled_at=scheduled,
        started_at=_utc(m["started_at"]),
        finished_at=_utc(m["finished_at"]),
        last_error=m["last_error"],
        unique_key=m["unique_key"],
        trace_context=m.get("trace_context"),
    )


class SqlJobQueue(JobQueue):
    def __init__(self, db: Database, *, finished_ttl: float, poll_interval: float) -> None:
        self._db = db
        self._ttl = timedelta(seconds=finished_ttl)
        self._poll = poll_interval
        self._pg = not db.is_sqlite
        self._wake = asyncio.Event()
        self._listener: Any = None
        self._listen_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def _tx(self) -> Any:
        try:
            async with self._db.writing(), self._db.engine.begin() as conn:
                yield conn
        except Exception as exc:
            if is_connectivity_error(exc):
                raise ServiceUnavailable("The job queue database is unreachable") from exc
            raise

    def _insert(self) -> Any:
        return (
            postgresql.insert(jobs) if self._pg else sqlite.insert(jobs)
        ).on_conflict_do_nothing()

    async def _notify(self, conn: AsyncConnection) -> None:
        if self._pg:
            await conn.execute(text("SELECT pg_notify(:c, '')"), {"c": CHANNEL})

    def _woke(self) -> None:
        self._wake.set()

    # -- producers ------------------------------------------------------------------------
    async def enqueue(self, request: JobRequest, *, job_id: str | None = None) -> Job:
        async with self._tx() as conn:
            job = await self._enqueue_one(conn, request, job_id or new_job_id())
            if not job.existing:
                await self._notify(conn)
        self._woke()
        return job

    async def enqueue_many(self, requests: Sequence[JobRequest]) -> list[Job]:
        out: list[Job] = []
        async with self._tx() as conn:
            for request in requests:
                out.append(await self._enqueue_one(conn, request, new_job_id()))
            await self._notify(conn)
        self._woke()
        return out

    async def _enqueue_one(self, conn: AsyncConnection, request: JobRequest, job_id: str) -> Job:
        for _ in range(3):
            job = new_job(request, job_id, utcnow(), trace_context=tracing.current_traceparent())
            stmt = (
                self._insert()
                .values(
                    id=job.id,
                    job_type=job.job_type,
                    payload=job.payload,
                    priority=int(job.priority),
                    max_retries=job.max_retries,
                    retry_count=0,
                    status=job.status.value,
                    created_at=job.created_at,
                    scheduled_at=job.scheduled_at,
                    unique_key=job.unique_key,
                    unique_active=job.unique_key,
                    trace_context=job.trace_context,
                )
                .returning(jobs.c.seq)
            )
            if (await conn.execute(stmt)).first() is not None:
                return job
            cond = jobs.c.id == job_id
            if request.unique_key is not None:
                cond = cond | (jobs.c.unique_active == request.unique_key)
            row = (await conn.execute(select(jobs).where(cond).limit(1))).first()
            if row is not None:
                existing = _job(row)
                existing.existing = True
                return existing
        raise ServiceUnavailable("could not enqueue the job; try again")

    # -- reading --------------------------------------------------------------------------
    async def get(self, job_id: str) -> Job | None:
        async with self._tx() as conn:
            row = (await conn.execute(select(jobs).where(jobs.c.id == job_id))).first()
        return _job(row) if row is not None else None

    async def list_jobs(
        self, status: JobStatus | None, page: int, size: int
    ) -> tuple[list[Job], int]:
        query = select(jobs)
        count = select(func.count()).select_from(jobs)
        if status is not None:
            query = query.where(jobs.c.status == status.value)
            count = count.where(jobs.c.status == status.value)
        if status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RETRYING):
            query = query.order_by(jobs.c.priority.desc(), jobs.c.scheduled_at, jobs.c.seq)
        else:
            query = query.order_by(jobs.c.seq.desc())
        async with self._tx() as conn:
            total = int((await conn.execute(count)).scalar_one())
            rows = (await conn.execute(query.offset(page * size).limit(size))).all()
        return [_job(r) for r in rows], total

    async def stats(self) -> QueueStats:
        async with self._tx() as conn:
            rows = (
                await conn.execute(
                    select(jobs.c.status, jobs.c.priority, func.count()).group_by(
                        jobs.c.status, jobs.c.priority
                    )
                )
            ).all()
        depth = {p.name: 0 for p in Priority}
        by_status: dict[str, int] = {}
        for status, priority, n in rows:
            by_status[status] = by_status.get(status, 0) + int(n)
            if status == JobStatus.QUEUED.value:
                depth[Priority(priority).name] += int(n)
        return QueueStats(
            depth=depth,
            scheduled=by_status.get("scheduled", 0),
            retrying=by_status.get("retrying", 0),
            running=by_status.get("running", 0),
            succeeded=by_status.get("succeeded", 0),
            dead=by_status.get("dead", 0),
        )

    async def retry_dead(self, job_id: str) -> Job:
        now = utcnow()
        for take_unique in (True, False):
            values: dict[str, Any] = {
                "status": JobStatus.QUEUED.value,
                "retry_count": jobs.c.retry_count + 1,
                "scheduled_at": now,
                "finished_at": None,
            }
            if take_unique:
                values["unique_active"] = jobs.c.unique_key
            try:
                async with self._tx() as conn:
                    row = (
                        await conn.execute(
                            update(jobs)
                            .where(jobs.c.id == job_id, jobs.c.status == JobStatus.DEAD.value)
                            .values(**values)
                            .returning(*jobs.c)
                        )
                    ).first()
                    if row is not None:
                        await self._notify(conn)
            except Exception as exc:
                if take_unique and "unique" in str(exc).lower():
                    continue  # another active job holds the key: run without it
                raise
            if row is not None:
                self._woke()
                return _job(row)
            break
        job = await self.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        raise InvalidState(f"job {job_id} is {job.status.value}; only dead jobs can be retried")

    async def oldest_ready_at(self) -> datetime | None:
        """When the job that has waited longest to run became due (for metrics)."""
        async with self._tx() as conn:
            value = await conn.scalar(
                select(func.min(jobs.c.scheduled_at)).where(
                    jobs.c.status.in_(_WAITING), jobs.c.scheduled_at <= utcnow()
                )
            )
        return _utc(value)

    # -- workers --------------------------------------------------------------------------
    async def fetch(self, worker_id: str, limit: int, lease_seconds: float) -> list[Job]:
        now = utcnow()
        pick = (
            select(jobs.c.seq)
            .where(jobs.c.status.in_(_WAITING), jobs.c.scheduled_at <= now)
            .order_by(jobs.c.priority.desc(), jobs.c.scheduled_at, jobs.c.seq)
            .limit(limit)
        )
        if self._pg:
            pick = pick.with_for_update(skip_locked=True)
        stmt = (
            update(jobs)
            .where(jobs.c.seq.in_(pick.scalar_subquery()))
            .values(
                status=JobStatus.RUNNING.value,
                worker_id=worker_id,
                started_at=now,
                lease_until=now + timedelta(seconds=lease_seconds),
            )
            .returning(*jobs.c)
        )
        async with self._tx() as conn:
            rows = (await conn.execute(stmt)).all()
        rows.sort(key=lambda r: (-r.priority, _utc(r.scheduled_at), r.seq))
        return [_job(r) for r in rows]

    async def heartbeat(self, worker_id: str, job_ids: Sequence[str], lease_seconds: float) -> None:
        if not job_ids:
            return
        async with self._tx() as conn:
            await conn.execute(
                update(jobs)
                .where(
                    jobs.c.id.in_(list(job_ids)),
                    jobs.c.status == JobStatus.RUNNING.value,
                    jobs.c.worker_id == worker_id,
                )
                .values(lease_until=utcnow() + timedelta(seconds=lease_seconds))
            )

    async def complete(self, worker_id: str, job_ids: Sequence[str]) -> int:
        if not job_ids:
            return 0
        async with self._tx() as conn:
            result = await conn.execute(
                update(jobs)
                .where(
                    jobs.c.id.in_(list(job_ids)),
                    jobs.c.status == JobStatus.RUNNING.value,
                    jobs.c.worker_id == worker_id,
                )
                .values(
                    status=JobStatus.SUCCEEDED.value,
                    finished_at=utcnow(),
                    unique_active=None,
                    lease_until=None,
                )
            )
        return int(result.rowcount)

    async def fail(
        self, worker_id: str, job_id: str, error: str, retry_delay: float
    ) -> JobStatus | None:
        now = utcnow()
        retry = jobs.c.retry_count < jobs.c.max_retries
        stmt = (
            update(jobs)
            .where(
                jobs.c.id == job_id,
                jobs.c.status == JobStatus.RUNNING.value,
                jobs.c.worker_id == worker_id,
            )
            .values(
                status=case(
                    (retry, literal(JobStatus.RETRYING.value)), else_=literal(JobStatus.DEAD.value)
                ),
                retry_count=case((retry, jobs.c.retry_count + 1), else_=jobs.c.retry_count),
                scheduled_at=case(
                    (
                        retry,
                        literal(now + timedelta(seconds=retry_delay), jobs.c.scheduled_at.type),
                    ),
                    else_=jobs.c.scheduled_at,
                ),
                finished_at=case(
                    (retry, literal(None, jobs.c.finished_at.type)),
                    else_=literal(now, jobs.c.finished_at.type),
                ),
                unique_active=case(
                    (retry, jobs.c.unique_active), else_=literal(None, jobs.c.unique_active.type)
                ),
                last_error=error[:2000],
                worker_id=None,
                lease_until=None,
            )
            .returning(jobs.c.status)
        )
        async with self._tx() as conn:
            row = (await conn.execute(stmt)).first()
        return JobStatus(row[0]) if row is not None else None

    async def release(self, worker_id: str, job_ids: Sequence[str]) -> int:
        if not job_ids:
            return 0
        async with self._tx() as conn:
            result = await conn.execute(
                update(jobs)
                .where(
                    jobs.c.id.in_(list(job_ids)),
                    jobs.c.status == JobStatus.RUNNING.value,
                    jobs.c.worker_id == worker_id,
                )
                .values(status=JobStatus.QUEUED.value, worker_id=None, lease_until=None)
            )
            await self._notify(conn)
        self._woke()
        return int(result.rowcount)

    async def reap(self) -> int:
        now = utcnow()
        async with self._tx() as conn:
            expired = await conn.execute(
                update(jobs)
                .where(jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_until < now)
                .values(status=JobStatus.QUEUED.value, worker_id=None, lease_until=None)
            )
            await conn.execute(
                update(jobs)
                .where(
                    jobs.c.status.in_((JobStatus.SCHEDULED.value, JobStatus.RETRYING.value)),
                    jobs.c.scheduled_at <= now,
                )
                .values(status=JobStatus.QUEUED.value)
            )
            await conn.execute(
                delete(jobs).where(
                    and_(
                        jobs.c.status == JobStatus.SUCCEEDED.value,
                        jobs.c.finished_at < now - self._ttl,
                    )
                )
            )
            n = int(expired.rowcount)
            if n:
                await self._notify(conn)
        return n

    # -- waiting --------------------------------------------------------------------------
    async def _listen(self) -> None:
        if self._listener is not None or not self._pg:
            return
        async with self._listen_lock:
            if self._listener is not None:
                return
            import asyncpg

            dsn = self._db.direct_url.replace("postgresql+asyncpg://", "postgresql://")
            try:
                conn = await asyncpg.connect(dsn, timeout=5)
                await conn.add_listener(CHANNEL, lambda *_: self._wake.set())
            except Exception as exc:  # fall back to polling; retried on the next wait
                log.warning("LISTEN %s failed: %s", CHANNEL, exc)
                return
            self._listener = conn

    async def wait_for_work(self, timeout: float) -> None:
        await self._listen()
        if self._listener is not None and self._listener.is_closed():
            self._listener = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), min(timeout, self._poll))
        self._wake.clear()

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
