"""The SQL job queue and migrations through PgBouncer in transaction mode; a NOTIFY sent
through it wakes a worker that LISTENs on the direct URL."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from arcana.adapters.database import Database
from arcana.adapters.migrator import migrate
from arcana.config import Settings
from arcana.domain.jobs import JobQueue, JobRequest
from arcana.lifecycle import Lifecycle
from tests.conftest import PG_ADMIN_DSN, base_settings
from tests.integration.test_jobqueue import (
    qc,
    queue,
    test_delayed_job_waits_for_its_time,
    test_enqueue_many_and_batch_fetch,
    test_expired_lease_is_reaped_and_stale_worker_cannot_ack,
    test_failure_retries_with_backoff_then_dead_then_retry_from_dead,
    test_list_by_status_with_paging,
    test_priority_order_then_fifo,
    test_three_schedulers_enqueue_each_period_once,
    test_unique_key_deduplicates_while_active,
)
from tests.jobs_support import open_container
from tests.pgbouncer.bouncer import PgBouncer
from tests.pgbouncer.conftest import through

__all__ = [
    "qc",
    "queue",
    "test_delayed_job_waits_for_its_time",
    "test_enqueue_many_and_batch_fetch",
    "test_expired_lease_is_reaped_and_stale_worker_cannot_ack",
    "test_failure_retries_with_backoff_then_dead_then_retry_from_dead",
    "test_list_by_status_with_paging",
    "test_priority_order_then_fifo",
    "test_three_schedulers_enqueue_each_period_once",
    "test_unique_key_deduplicates_while_active",
]


@pytest.fixture
def qsettings(pgbouncer: PgBouncer, pg_url: str, tmp_path: Path) -> Settings:
    return base_settings(
        database_url=through(pgbouncer, pg_url),
        database_direct_url=pg_url,
        queue_backend="database",
        job_poll_interval=0.05,
        var_dir=tmp_path / "var",
    )


async def test_an_enqueue_through_pgbouncer_wakes_a_listening_worker(qsettings: Settings) -> None:
    slow = qsettings.replace(job_poll_interval=30.0)
    async for producer in open_container(slow):
        consumer_process = Lifecycle.build(slow)
        consumer = consumer_process.app
        try:
            q: JobQueue = consumer.queue
            await q.wait_for_work(0.01)  # starts its LISTEN on the direct URL
            waiter = asyncio.create_task(q.wait_for_work(20.0))
            await asyncio.sleep(0.2)
            assert not waiter.done()
            await producer.queue.enqueue(JobRequest("system.noop"))
            await asyncio.wait_for(waiter, 5.0)  # the NOTIFY, not the 30 s poll
        finally:
            await consumer_process.stop()


async def test_migrations_run_through_pgbouncer(pgbouncer: PgBouncer) -> None:
    name = f"arcana_bouncer_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        direct = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        db = Database(
            base_settings(database_url=pgbouncer.url(name), database_direct_url=f"{direct}/{name}")
        )
        try:
            await migrate(db)
            await migrate(db)  # idempotent
        finally:
            await db.dispose()
        conn = await asyncpg.connect(PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}")
        try:
            tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables")}
            assert {"users", "products", "outbox", "jobs", "alembic_version"} <= tables
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
