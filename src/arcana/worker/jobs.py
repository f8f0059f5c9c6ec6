"""Built-in job handlers and how a process starts its workers and scheduler."""

from __future__ import annotations

import asyncio
import logging

from arcana.bootstrap import Container
from arcana.domain.jobs import DEFAULT_PRIORITIES
from arcana.worker.registry import HandlerRegistry, JobContext
from arcana.worker.runner import Worker
from arcana.worker.scheduler import default_schedule, run_scheduler

log = logging.getLogger("arcana.jobs")


class EchoFailed(RuntimeError):
    """``system.echo`` failing on purpose (its first ``fail_times`` attempts)."""


def build_registry(container: Container) -> HandlerRegistry:
    registry = HandlerRegistry()
    settings = container.settings

    @registry.handler("system.noop")
    async def noop(ctx: JobContext) -> None:
        return None

    @registry.handler("system.echo")
    async def echo(ctx: JobContext) -> None:
        fail_times = int(ctx.payload.get("fail_times") or 0)
        sleep = float(ctx.payload.get("sleep_seconds") or 0)
        if sleep > 0:  # optional: lets operators and tests hold a worker slot
            await asyncio.sleep(min(sleep, 3600.0))
        if ctx.attempt <= fail_times:
            raise EchoFailed(f"failing attempt {ctx.attempt} of the first {fail_times} on purpose")
        log.info("echo: %s", ctx.payload.get("message", ""))

    @registry.handler("email.welcome")
    async def welcome(ctx: JobContext) -> None:
        p = ctx.payload
        await container.mailer.send_template(
            "welcome",
            p["email"],
            {"name": p.get("name") or "", "email": p["email"], "user_id": p.get("user_id")},
            idempotency_key=ctx.job.id,
        )

    @registry.handler("auth.password_reset_request")
    async def password_reset_request(ctx: JobContext) -> None:
        # Queued by forgot-password: the look-up and the token happen here, off the request.
        await container.auth.issue_reset(str(ctx.payload["email"]))

    @registry.handler("email.password_reset")
    async def password_reset(ctx: JobContext) -> None:
        p = ctx.payload
        await container.mailer.send_template(
            "password_reset",
            p["email"],
            {
                "email": p["email"],
                # Sealed at rest; opened only here, on its way into the mail.
                "reset_token": container.sealer.unseal(str(p["reset_token"])),
                "minutes": max(settings.reset_token_ttl // 60, 1),
            },
            idempotency_key=ctx.job.id,
        )

    @registry.handler("email.security_notice")
    async def security_notice(ctx: JobContext) -> None:
        # The event handler sends only the user id: the address is looked up when the mail
        # goes out, so a user deleted meanwhile gets nothing.
        p = ctx.payload
        email, name = p.get("email"), p.get("name") or ""
        if not email and p.get("user_id"):
            user = await container.users.get_user(str(p["user_id"]))
            if user is None:
                log.info("security notice skipped: user %s no longer exists", p["user_id"])
                return
            email, name = user.email, user.name
        if not email:
            raise ValueError("email.security_notice needs user_id or email")
        await container.mailer.send_template(
            "security_notice",
            str(email),
            {"email": email, "name": name},
            idempotency_key=ctx.job.id,
        )

    @registry.handler("notify.admins_stock")
    async def admins_stock(ctx: JobContext) -> None:
        p = ctx.payload
        admins = await container.users.list_with_role("admin")
        context = {"product_id": p.get("productId"), "stock": int(p.get("stock") or 0)}
        for admin in admins:
            await container.mailer.send_template(
                "stock_alert",
                admin.email,
                {**context, "name": admin.name},
                # A re-run after a crash mails nobody twice.
                idempotency_key=f"{ctx.job.id}:{admin.id}",
            )
        log.info("stock alert for %s sent to %d admin(s)", context["product_id"], len(admins))

    @registry.handler("sync.pending_users")
    async def pending_users(ctx: JobContext) -> None:
        n = await container.sync_pending_users()
        log.info("sync.pending_users handled %d user(s)", n)

    @registry.handler("sync.cleanup_tokens")
    async def cleanup_tokens(ctx: JobContext) -> None:
        n = await container.cleanup_tokens()
        log.info("sync.cleanup_tokens removed %d row(s)", n)

    missing = [t for t in DEFAULT_PRIORITIES if registry.resolve(t) is None]
    assert not missing, f"built-in job types without a handler: {missing}"
    return registry


def build_worker(container: Container, registry: HandlerRegistry | None = None) -> Worker:
    s = container.settings
    return Worker(
        container.queue,
        registry or build_registry(container),
        concurrency=s.worker_concurrency,
        batch_size=s.job_batch_size,
        lease_seconds=s.job_lease_seconds,
        reap_interval=s.job_reap_interval,
        timeout=s.job_timeout,
        backoff_base=s.job_backoff_base,
        backoff_cap=s.job_backoff_cap,
        shutdown_timeout=max(s.shutdown_timeout * 0.8, 0.0),
    )


def start_jobs(container: Container) -> None:
    """Spawn a worker and (unless disabled) the scheduler in this process."""
    worker = build_worker(container)
    container.spawn("jobs.worker", worker.run)
    if container.settings.scheduler_enabled:
        schedule = default_schedule(container.settings)

        async def scheduler(stop: asyncio.Event) -> None:
            await run_scheduler(container.queue, schedule, stop)

        container.spawn("jobs.scheduler", scheduler)
