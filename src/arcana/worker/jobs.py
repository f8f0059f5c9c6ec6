"""The built-in job types mapped to service calls, and the job worker and scheduler loops a
process runs (``arcana.lifecycle`` starts them)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

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
from arcana.services.app import Services
from arcana.worker.registry import HandlerFn, HandlerRegistry, JobContext
from arcana.worker.runner import Worker
from arcana.worker.scheduler import default_schedule, run_scheduler

log = logging.getLogger("arcana.jobs")

BackgroundLoop = Callable[[asyncio.Event], Awaitable[None]]
"""A loop that returns soon after the stop event is set."""


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


def handler_table(services: Services) -> dict[JobType[Any], HandlerFn]:
    """Each built-in job type and the one service call that runs it. The payload was built
    from the type's shape (``domain/jobs.py``) when the job was enqueued."""
    notices = services.notifications
    maintenance = services.maintenance

    async def noop(ctx: JobContext) -> None:
        return None

    async def reset_request(ctx: JobContext) -> None:
        # Queued by forgot-password: the look-up and the token happen here, off the request.
        await services.auth.issue_reset(str(ctx.payload["email"]))

    async def pending_users(ctx: JobContext) -> None:
        n = await maintenance.sync_pending_users()
        log.info("sync.pending_users handled %d user(s)", n)

    async def cleanup_tokens(ctx: JobContext) -> None:
        n = await maintenance.cleanup()
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


def build_registry(services: Services) -> HandlerRegistry:
    registry = HandlerRegistry()
    for job_type, handler in handler_table(services).items():
        registry.register(job_type.name, handler)
    missing = [name for name in JOB_TYPES if registry.resolve(name) is None]
    assert not missing, f"built-in job types without a handler: {missing}"
    return registry


def build_worker(services: Services, registry: HandlerRegistry | None = None) -> Worker:
    s = services.settings
    return Worker(
        services.queue,
        registry or build_registry(services),
        concurrency=s.jobs.worker_concurrency,
        batch_size=s.jobs.batch_size,
        lease_seconds=s.jobs.lease_seconds,
        reap_interval=s.jobs.reap_interval,
        timeout=s.jobs.timeout,
        backoff_base=s.jobs.backoff_base,
        backoff_cap=s.jobs.backoff_cap,
        shutdown_timeout=max(s.shutdown_timeout * 0.8, 0.0),
    )


def job_loops(services: Services) -> dict[str, BackgroundLoop]:
    """The loops that run jobs in this process, by name: a worker and, unless disabled, the
    scheduler of periodic jobs."""
    loops: dict[str, BackgroundLoop] = {"jobs.worker": build_worker(services).run}
    if services.settings.jobs.scheduler_enabled:
        schedule = default_schedule(services.settings)

        async def scheduler(stop: asyncio.Event) -> None:
            await run_scheduler(services.queue, schedule, stop)

        loops["jobs.scheduler"] = scheduler
    return loops
