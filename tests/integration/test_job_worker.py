"""The worker end to end in this process: retries, dead letters, leases, timeouts, shutdown,
handler registry, and mail through a real SMTP server."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from arcana.bootstrap import App
from arcana.config import Settings
from arcana.domain.jobs import Job, JobRequest, JobStatus, Priority
from arcana.worker.jobs import build_registry, build_worker
from arcana.worker.registry import HandlerRegistry, JobContext
from arcana.worker.runner import Worker
from tests.conftest import wait_for
from tests.jobs_support import QUEUE_BACKENDS, open_container, queue_settings
from tests.process import free_port

FAST = {
    "job_backoff_base": 0.01,
    "job_backoff_cap": 0.05,
    "job_poll_interval": 0.05,
    "job_reap_interval": 0.1,
    "shutdown_timeout": 5.0,
    "scheduler_enabled": False,
}


@pytest.fixture(params=QUEUE_BACKENDS)
def qsettings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return queue_settings(request, request.param, tmp_path, **FAST)


@pytest.fixture
async def qc(qsettings: Settings) -> AsyncIterator[App]:
    async for c in open_container(qsettings):
        yield c


class Running:
    """A worker loop run in the background of the test."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(worker.run(self.stop))

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


async def status_of(c: App, job_id: str) -> JobStatus | None:
    job = await c.queue.get(job_id)
    return job.status if job else None


async def finished(c: App, job: Job, status: JobStatus) -> Job:
    async def check() -> Job | None:
        j = await c.queue.get(job.id)
        return j if j is not None and j.status is status else None

    result: Job = await wait_for(check, timeout=20)
    return result


async def test_echo_canary_retries_then_succeeds(qc: App) -> None:
    w = Running(build_worker(qc))
    try:
        job = await qc.queue.enqueue(JobRequest("system.echo", {"message": "hi", "fail_times": 2}))
        done = await finished(qc, job, JobStatus.SUCCEEDED)
        assert done.retry_count == 2
        assert done.last_error is not None
        assert "attempt 2" in done.last_error
    finally:
        await w.close()


async def test_echo_canary_dead_letter_then_retry_from_dead(qc: App) -> None:
    w = Running(build_worker(qc))
    try:
        job = await qc.queue.enqueue(
            JobRequest("system.echo", {"message": "x", "fail_times": 3}, max_retries=2)
        )
        dead = await finished(qc, job, JobStatus.DEAD)
        assert dead.retry_count == 2
        assert "EchoFailed" in (dead.last_error or "")
        again = await qc.jobs.retry(job.id)
        assert again.retry_count == 3
        done = await finished(qc, job, JobStatus.SUCCEEDED)
        assert done.retry_count == 3
    finally:
        await w.close()


async def test_priorities_run_first_on_a_busy_worker(qc: App) -> None:
    seen: list[str] = []
    registry = HandlerRegistry()

    @registry.handler("system.*")
    async def record(ctx: JobContext) -> None:
        seen.append(ctx.payload["n"])

    jobs = [
        JobRequest("system.noop", {"n": "low"}, priority=Priority.LOW),
        JobRequest("system.noop", {"n": "normal"}),
        JobRequest("system.noop", {"n": "critical"}, priority=Priority.CRITICAL),
        JobRequest("system.noop", {"n": "high"}, priority=Priority.HIGH),
    ]
    await qc.queue.enqueue_many(jobs)
    worker = Worker(qc.queue, registry, concurrency=1, batch_size=1, reap_interval=0.1)
    w = Running(worker)
    try:
        await wait_for(lambda: len(seen) == 4, timeout=20)
    finally:
        await w.close()
    assert seen == ["critical", "high", "normal", "low"]


class CountingQueue:
    """The worker's queue, counting the heartbeats and reaper passes that went through it."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue
        self.heartbeats = 0
        self.reaps = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def heartbeat(self, *args: Any) -> Any:
        result = await self._queue.heartbeat(*args)
        self.heartbeats += 1
        return result

    async def reap(self) -> int:
        n: int = await self._queue.reap()
        self.reaps += 1
        return n


class FetchRecordingQueue(CountingQueue):
    """The worker's queue, recording how many jobs each fetch asked for and got."""

    def __init__(self, queue: Any) -> None:
        super().__init__(queue)
        self.fetches: list[tuple[int, int]] = []

    async def fetch(self, worker_id: str, limit: int, lease: float) -> list[Job]:
        jobs: list[Job] = await self._queue.fetch(worker_id, limit, lease)
        self.fetches.append((limit, len(jobs)))
        return jobs


async def test_default_worker_leases_a_whole_batch_per_fetch(qc: App) -> None:
    """With the default settings one fetch round trip carries ``ARCANA_JOB_BATCH_SIZE`` jobs:
    a fetch asks for at most the free slots, so a concurrency below the batch size would cap
    every batch at the concurrency."""
    batch = qc.settings.jobs.batch_size
    worker = build_worker(qc)
    queue = FetchRecordingQueue(worker.queue)
    worker.queue = queue  # type: ignore[assignment]
    jobs = await qc.queue.enqueue_many([JobRequest("system.noop") for _ in range(2 * batch)])
    w = Running(worker)
    try:
        for job in jobs:
            await finished(qc, job, JobStatus.SUCCEEDED)
    finally:
        await w.close()
    assert queue.fetches[0] == (batch, batch), queue.fetches


async def test_heartbeat_keeps_a_job_longer_than_its_lease(qc: App) -> None:
    """The job runs until its first lease is long over and the other worker's reaper has
    looked at it twice since: without heartbeats that reaper hands it out again (two runs).
    Progress is counted, not slept; the 3 s lease (a heartbeat every ~1 s) leaves a busy
    machine room for a long scheduling hiccup."""
    runs: list[str] = []
    beats: list[int] = []
    registry = HandlerRegistry()
    holder, other = CountingQueue(qc.queue), CountingQueue(qc.queue)

    def make(queue: CountingQueue) -> Worker:
        return Worker(queue, registry, lease_seconds=3.0, reap_interval=0.1)  # type: ignore[arg-type]

    a, b = Running(make(holder)), Running(make(other))
    workers = {a.worker.worker_id: a.worker, b.worker.worker_id: b.worker}

    @registry.handler("system.noop")
    async def long_job(ctx: JobContext) -> None:
        runs.append(ctx.worker_id)
        if len(runs) > 1:
            return
        worker = workers[ctx.worker_id]
        queue = holder if worker is a.worker else other
        watcher = other if queue is holder else holder
        lease_over = asyncio.get_running_loop().time() + worker.lease + 0.2
        await wait_for(lambda: asyncio.get_running_loop().time() > lease_over, timeout=30)
        reaps = watcher.reaps
        await wait_for(lambda: watcher.reaps >= reaps + 2, timeout=30)
        beats.append(queue.heartbeats)

    try:
        job = await qc.queue.enqueue(JobRequest("system.noop"))
        await finished(qc, job, JobStatus.SUCCEEDED)
    finally:
        await a.close()
        await b.close()
    assert len(runs) == 1, runs
    assert beats[0] >= 2  # the lease was kept by heartbeats, not by a slow reaper


async def test_handler_timeout_counts_as_a_failure(qc: App) -> None:
    registry = HandlerRegistry()

    @registry.handler("system.noop")
    async def hang(ctx: JobContext) -> None:
        await asyncio.Event().wait()

    w = Running(Worker(qc.queue, registry, timeout=0.1, backoff_base=0.01, reap_interval=0.1))
    try:
        job = await qc.queue.enqueue(JobRequest("system.noop", max_retries=1))
        dead = await finished(qc, job, JobStatus.DEAD)
        assert dead.last_error is not None
        assert dead.last_error.startswith("TimeoutError")
    finally:
        await w.close()


async def test_graceful_shutdown_finishes_in_flight_and_returns_the_rest(qc: App) -> None:
    release = asyncio.Event()
    registry = HandlerRegistry()

    @registry.handler("system.echo")
    async def quick(ctx: JobContext) -> None:
        await release.wait()

    @registry.handler("system.noop")
    async def stuck(ctx: JobContext) -> None:
        await asyncio.Event().wait()

    quick_job = await qc.queue.enqueue(JobRequest("system.echo"))
    stuck_job = await qc.queue.enqueue(JobRequest("system.noop"))
    worker = Worker(qc.queue, registry, concurrency=2, shutdown_timeout=0.5, reap_interval=0.1)
    w = Running(worker)
    await wait_for(lambda: len(worker._inflight) == 2, timeout=20)
    w.stop.set()
    release.set()
    await asyncio.wait_for(w.task, 30)
    assert await status_of(qc, quick_job.id) is JobStatus.SUCCEEDED
    returned = await qc.queue.get(stuck_job.id)
    assert returned is not None
    assert returned.status is JobStatus.QUEUED
    assert returned.retry_count == 0


def test_registry_exact_prefix_and_class_handlers() -> None:
    registry = HandlerRegistry()

    async def exact(ctx: JobContext) -> None: ...

    async def family(ctx: JobContext) -> None: ...

    class Sender:
        async def handle(self, ctx: JobContext) -> None: ...

    registry.register("email.welcome", exact)
    registry.register("email.*", family)
    registry.register("report.*", Sender)
    assert registry.resolve("email.welcome") is exact
    assert registry.resolve("email.password_reset") is family
    resolved: Any = registry.resolve("report.daily")
    assert resolved is not None
    assert resolved.__self__.__class__ is Sender
    assert registry.resolve("other") is None


# -- mail ----------------------------------------------------------------------------------
class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(msg)  # type: ignore[arg-type]
        return "250 OK"


@pytest.fixture
def smtp() -> Any:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


def _text(msg: email.message.EmailMessage, subtype: str) -> str:
    part = msg.get_body(preferencelist=(subtype,))
    assert part is not None
    return str(part.get_content())


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
async def test_emails_reach_a_real_smtp_server(
    kind: str, smtp: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    controller, inbox = smtp
    settings = queue_settings(
        request, kind, tmp_path, smtp_url=f"smtp://127.0.0.1:{controller.port}", **FAST
    )
    async for c in open_container(settings):
        w = Running(build_worker(c))
        try:
            await c.queue.enqueue(
                JobRequest(
                    "email.welcome", {"user_id": "u1", "email": "ann@example.com", "name": "Ann"}
                )
            )
            await c.queue.enqueue(
                JobRequest(
                    "email.password_reset",
                    # sealed at rest, as the auth service enqueues it
                    {"email": "bob@example.com", "reset_token": c.auth_area.sealer.seal("tok-123")},
                    priority=Priority.HIGH,
                )
            )
            await c.queue.enqueue(
                JobRequest("email.security_notice", {"email": "cy@example.com", "name": "Cy"})
            )
            await wait_for(lambda: len(inbox.messages) == 3, timeout=20)
        finally:
            await w.close()
    by_to = {m["To"]: m for m in inbox.messages}
    welcome = by_to["ann@example.com"]
    assert welcome["Subject"].startswith("Welcome to Arcana")
    assert "Ann" in _text(welcome, "plain")
    assert "Ann" in _text(welcome, "html")
    reset = by_to["bob@example.com"]
    assert reset["Subject"].startswith("Reset your Arcana password")
    assert "Reset token: tok-123" in _text(reset, "plain").splitlines()
    assert "tok-123" in _text(reset, "html")
    notice = by_to["cy@example.com"]
    assert "password was changed" in notice["Subject"]


async def test_mail_without_smtp_goes_to_eml_files(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    settings = queue_settings(request, "sqlite", tmp_path, **FAST)
    async for c in open_container(settings):
        registry = build_registry(c)
        handler = registry.resolve("email.password_reset")
        assert handler is not None
        job = await c.queue.enqueue(
            JobRequest(
                "email.password_reset",
                {"email": "d@example.com", "reset_token": c.auth_area.sealer.seal("t9")},
            )
        )
        await handler(JobContext(job, "test"))
    files = list((settings.var_dir / "mail").glob("*.eml"))
    assert len(files) == 1
    msg = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert msg["Subject"].startswith("Reset your Arcana password")
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    assert "Reset token: t9" in str(body.get_content())
