"""Failover: the master holding the job queue is killed while jobs run. Its replica takes
over; every job runs at least once and the API answers again. The gap (kill -> first
successful queue write) is printed and recorded as the ``failover_gap_seconds`` property."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.crc import key_slot

from arcana.api.app import create_app
from arcana.bootstrap import App
from arcana.domain.jobs import JobRequest
from arcana.lifecycle import Lifecycle
from arcana.worker.jobs import build_worker
from arcana.worker.registry import HandlerRegistry, JobContext
from tests.conftest import base_settings, insert_principals, truncate_all, wait_for
from tests.integration.test_job_worker import Running
from tests.rediscluster.cluster import LocalCluster

JOBS = 240


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Its own cluster: the session cluster must keep all its nodes."""
    cluster = LocalCluster(tmp_path / "cluster", node_timeout_ms=1000)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def fc(private_cluster: LocalCluster, tmp_path: Path, pg_url: str) -> AsyncIterator[App]:
    url = pg_url
    await truncate_all(url)
    settings = base_settings(
        database_url=url,
        redis_url=private_cluster.url,
        redis_prefix=f"arcana-{uuid.uuid4().hex[:8]}",
        var_dir=tmp_path / "var",
        job_lease_seconds=3.0,
        job_reap_interval=0.2,
        job_backoff_base=0.01,
        job_backoff_cap=0.05,
        worker_concurrency=4,
        scheduler_enabled=False,
        shutdown_timeout=5.0,
    )
    c_process = Lifecycle.build(settings)
    c = c_process.app
    await c_process.start(migrate_embedded=False)
    await insert_principals(c)
    try:
        yield c
    finally:
        await c_process.stop()


async def test_killing_the_queue_master_loses_no_job_and_the_api_recovers(
    fc: App, private_cluster: LocalCluster, record_property: Any
) -> None:
    ran: set[str] = set()
    registry = HandlerRegistry()

    @registry.handler("test.record")
    async def record(ctx: JobContext) -> None:
        await asyncio.sleep(0.03)
        ran.add(ctx.job.id)

    jobs = await fc.queue.enqueue_many([JobRequest("test.record") for _ in range(JOBS)])
    wanted = {j.id for j in jobs}
    slot = key_slot(f"{{{fc.settings.redis.prefix}}}:q:seq".encode())
    master = private_cluster.master_of_slot(slot)
    private_cluster.wait_replicated(master)

    workers = [Running(build_worker(fc, registry)) for _ in range(2)]
    try:
        await wait_for(lambda: len(ran) >= JOBS // 6, timeout=20)
        private_cluster.kill(master)
        killed_at = time.monotonic()
        assert len(ran) < JOBS, "jobs should still be running when the master dies"

        async def queue_writes() -> bool:
            try:
                await fc.queue.enqueue(JobRequest("system.noop"))
            except Exception:
                return False
            return True

        await wait_for(queue_writes, timeout=30, interval=0.05)
        gap = time.monotonic() - killed_at
        record_property("failover_gap_seconds", round(gap, 2))
        print(f"\nfailover gap (kill -> first queue write): {gap:.2f}s")

        # Every job runs at least once: leases of the jobs running at the kill expire and
        # the reaper queues them again on the promoted replica.
        await wait_for(lambda: wanted <= ran, timeout=40, interval=0.1)

        token = fc.auth_area.tokens.issue(
            "admin-1", frozenset({"user", "admin"}), generation=0
        ).token
        transport = httpx.ASGITransport(app=create_app(fc), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/readyz")).status_code == 200
            r = await client.post(
                "/api/v1/admin/jobs",
                json={"job_type": "system.noop"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 202, r.text
        assert master.port not in {n.port for n in private_cluster.masters()}
    finally:
        for w in workers:
            await w.close()
