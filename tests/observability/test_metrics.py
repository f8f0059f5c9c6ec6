"""Sampled gauges (queue, outbox, stream, readiness) and the new histograms, on both
backends; ``arcana worker --metrics-port`` serves them from a worker process."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from arcana.bootstrap import App
from arcana.config import Settings
from arcana.domain.jobs import JobRequest, Priority
from arcana.lifecycle import Lifecycle
from tests.conftest import wait_for
from tests.process import ArcanaProcess, free_port


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_sampler_reports_queue_outbox_stream_and_readiness(
    client: httpx.AsyncClient, process: Lifecycle, container: App
) -> None:
    r = await client.post(
        "/api/v1/auth/register",
        json={"name": "M", "email": "metrics@example.com", "password": "Correct-Horse-9"},
    )
    assert r.status_code == 201
    for _ in range(3):
        await container.queue.enqueue(JobRequest("system.noop", priority=Priority.HIGH))
    await container.metrics_sampler.sample()
    assert value("arcana_outbox_backlog_rows") == 1
    age = value("arcana_outbox_oldest_unpublished_age_seconds")
    assert age is not None
    assert 0 <= age < 60
    assert value("arcana_jobs_queue_jobs", status="queued", priority="HIGH") == 3
    assert value("arcana_jobs_queue_jobs", status="dead", priority="all") == 0
    oldest = value("arcana_jobs_oldest_queued_age_seconds")
    assert oldest is not None
    assert 0 <= oldest < 60
    assert value("arcana_ready") == 1

    if not container.events.embedded:
        # PostgreSQL pool: nothing is checked out between requests, nobody waits.
        assert value("arcana_db_pool_connections_in_use") == 0
        assert value("arcana_db_pool_waiting") == 0
        consumer = container.events.consumer()
        await consumer.ensure_group()
        assert await container.events.relay.drain()
        await container.metrics_sampler.sample()
        assert value("arcana_outbox_backlog_rows") == 0
        assert value("arcana_events_stream_lag_entries", group="arcana") == 1
        await consumer.read_new(block_ms=1)
        await container.metrics_sampler.sample()
        assert value("arcana_events_stream_lag_entries", group="arcana") == 0
        assert value("arcana_events_stream_pending_entries", group="arcana") == 0

    before = value("arcana_job_queue_wait_seconds_count", job_type="system.noop") or 0
    handled = value(
        "arcana_event_handler_duration_seconds_count", event_type="auth.user_registered"
    )
    process.start_worker_loops()
    await wait_for(
        lambda: (
            (value("arcana_job_queue_wait_seconds_count", job_type="system.noop") or 0)
            >= before + 3
        ),
        timeout=20,
    )
    if container.events.embedded:
        await wait_for(
            lambda: (
                (
                    value(
                        "arcana_event_handler_duration_seconds_count",
                        event_type="auth.user_registered",
                    )
                    or 0
                )
                > (handled or 0)
            ),
            timeout=20,
        )


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_worker_serves_metrics_on_its_own_port(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = {
        "ARCANA_DATABASE_URL": settings.database.url.get_secret_value(),
        "ARCANA_VAR_DIR": str(tmp_path / "var"),
        "ARCANA_JWT_SECRET": "test-secret-" + "x" * 40,
        "ARCANA_ENV": "test",
        "ARCANA_HTTP_HOST": "127.0.0.1",
        "ARCANA_METRICS_SAMPLE_SECONDS": "0.2",
    }
    with ArcanaProcess(["worker", "--metrics-port", str(port)], env, tmp_path) as proc:
        # Generous: a CLI start-up on a loaded 2-core machine can take tens of seconds.
        proc.wait_http(f"http://127.0.0.1:{port}/metrics", timeout=120)

        async def scraped() -> str | None:
            async with httpx.AsyncClient() as http:
                r = await http.get(f"http://127.0.0.1:{port}/metrics")
            wanted = (
                "arcana_ready 1.0",
                'arcana_jobs_queue_jobs{priority="all",status="dead"} 0.0',
            )
            return r.text if all(w in r.text for w in wanted) else None

        text = await wait_for(scraped, timeout=30, interval=0.2)
    assert "arcana_outbox_backlog_rows 0.0" in text
