"""The built-in job types mapped to service calls, and how a process starts its workers and
scheduler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from arcana.bootstrap import Container
from arcana.domain.jobs import (
    ADMIN_STOCK_NOTICE,
    CLEANUP_TOKENS,
    JOB_TYPES,
    PASSWORD_RESET_EMAIL,
    PASSWORD_RESET_REQUEST,
    SECURITY_NOTICE,
    SYNC_PENDING_USERS,
    SYSTEM_ECHO,
    SYSTEM_NOOP,
    WELCOME_EMAIL,
    JobType,
)
from arcana.worker.registry import HandlerFn, HandlerRegistry, JobContext
from arcana.worker.runner import Worker
from arcana.worker.scheduler import default_schedule, run_scheduler

log = logging.getLogger("arcana.jobs")


class EchoFailed(RuntimeError):
    """``system.echo`` failing on purpose (its first ``fail_times`` attempts)."""


async def echo(ctx: JobContext) -> None:
    """``system.echo``: the operators' canary for retries, dead letters and held slots."""
    fail_times = int(ctx.payload.get("fail_times") or 0)
    sleep = float(ctx.payload.get("sleep_seconds") or 0)
    if sleep > 0:  # optional: lets operators and tests hold a worker slot
        await asyncio.sleep(min(sleep, 3600.0))
    if ctx.attempt <= fail_times:
        raise EchoFailed(f"failing attempt {ctx.attempt} of the first {fail_times} on purpose")
    log.info("echo: %s", ctx.payload.get("message", ""))


def handler_table(container: Container) -> dict[JobType[Any], HandlerFn]:
    """Each built-in job type and the one service call that runs it. The payload was built
    from the type's shape (``domain/jobs.py``) when the job was enqueued."""
    notices = container.notifications

    async def noop(ctx: JobContext) -> None:
        return None

    async def reset_request(ctx: JobContext) -> None:
        # Queued by forgot-password: the look-up and the token happen here, off the request.
        await container.auth.issue_reset(str(ctx.payload["email"]))

    async def pending_users(ctx: JobContext) -> None:
        n = await container.sync_pending_users()
        log.info("sync.pending_users handled %d user(s)", n)

    async def cleanup_tokens(ctx: JobContext) -> None:
        n = await container.cleanup_tokens()
        log.info("sync.cleanup_tokens removed %d row(s)", n)

    def call(use_case: Callable[[Any, str], Awaitable[object]]) -> HandlerFn:
        async def run(ctx: JobContext) -> None:
            await use_case(ctx.payload, ctx.job.id)

        return run

    return {
        SYSTEM_NOOP: noop,
        SYSTEM_ECHO: echo,
        WELCOME_EMAIL: call(notices.welcome),
        PASSWORD_RESET_REQUEST: reset_request,
        PASSWORD_RESET_EMAIL: call(notices.password_reset),
        SECURITY_NOTICE: call(notices.security_notice),
        ADMIN_STOCK_NOTICE: call(notices.stock_alert_to_admins),
        SYNC_PENDING_USERS: pending_users,
        CLEANUP_TOKENS: cleanup_tokens,
    }


def build_registry(container: Container) -> HandlerRegistry:
    registry = HandlerRegistry()
    for job_type, handler in handler_table(container).items():
        registry.register(job_type.name, handler)
    missing = [name for name in JOB_TYPES if registry.resolve(name) is None]
    assert not missing, f"built-in job types without a handler: {missing}"
    return registry


def build_worker(container: Container, registry: HandlerRegistry | None = None) -> Worker:
    s = container.settings
    return Worker(
        container.queue,
        registry or build_registry(container),
        concurrency=s.jobs.worker_concurrency,
        batch_size=s.jobs.batch_size,
        lease_seconds=s.jobs.lease_seconds,
        reap_interval=s.jobs.reap_interval,
        timeout=s.jobs.timeout,
        backoff_base=s.jobs.backoff_base,
        backoff_cap=s.jobs.backoff_cap,
        shutdown_timeout=max(s.shutdown_timeout * 0.8, 0.0),
    )


def start_jobs(container: Container) -> None:
    """Spawn a worker and (unless disabled) the scheduler in this process."""
    worker = build_worker(container)
    container.spawn("jobs.worker", worker.run)
    if container.settings.jobs.scheduler_enabled:
        schedule = default_schedule(container.settings)

        async def scheduler(stop: asyncio.Event) -> None:
            await run_scheduler(container.queue, schedule, stop)

        container.spawn("jobs.scheduler", scheduler)
