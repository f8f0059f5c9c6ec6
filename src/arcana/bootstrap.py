"""Composition root: builds every adapter and service from ``Settings`` and closes them.

Nothing here runs at import time. Entry points (api, rpc, worker, cli) get a ``Container``
and reach services through it; they never import adapters themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from redis.asyncio import Redis

from arcana import tracing
from arcana.adapters.cache import MemoryCache, RedisCache
from arcana.adapters.database import Database
from arcana.adapters.events import EventBus
from arcana.adapters.events.outbox import SqlOutbox
from arcana.adapters.jobqueue.partitioned import PartitionedRedisJobQueue
from arcana.adapters.jobqueue.redis import RedisJobQueue
from arcana.adapters.jobqueue.sql import SqlJobQueue
from arcana.adapters.jwt_tokens import JwtAccessTokens
from arcana.adapters.login_limiter import (
    MemoryAttemptQuota,
    MemoryLoginLimiter,
    RedisAttemptQuota,
    RedisLoginLimiter,
)
from arcana.adapters.mail import build_mailer
from arcana.adapters.metrics_sampler import MetricsSampler
from arcana.adapters.passwords import Argon2PasswordHasher, HashingSlots
from arcana.adapters.plugin_broadcast import (
    NullPluginReloadBroadcast,
    RedisPluginReloadBroadcast,
)
from arcana.adapters.plugins import build_audit
from arcana.adapters.redis_client import connect_redis, prepare_redis
from arcana.adapters.sealing import AesGcmSealer
from arcana.adapters.unit_of_work import SqlUnitOfWork
from arcana.adapters.user_sync import NullUserSync, WebhookUserSync
from arcana.config import Settings, reveal
from arcana.domain.audit import AuditEvent, AuditSink
from arcana.domain.events import DomainEvent
from arcana.domain.jobs import JobQueue
from arcana.domain.mail import Mailer
from arcana.domain.ports import Cache
from arcana.domain.timestamps import utcnow
from arcana.domain.users import AttemptQuota, LoginLimiter, UserSync
from arcana.metrics import CACHE_REQUESTS
from arcana.services.auth import AuthPolicy, AuthService
from arcana.services.events import DeferredJobs, build_event_handlers
from arcana.services.identity import IdentityService
from arcana.services.jobs import JobService
from arcana.services.notifications import NotificationService
from arcana.services.plugins import PluginService
from arcana.services.products import ProductCache, ProductService
from arcana.services.users import TokenGenerationCache, UserService, UserSyncService

log = logging.getLogger(__name__)

BackgroundTask = Callable[[asyncio.Event], Awaitable[None]]
"""A long-running loop that returns soon after the stop event is set."""


class _LateAudit:
    """Forwards to ``container.audit`` at call time: services hold this, so the sink can be
    swapped after construction (tests record events; reload keeps the same object)."""

    def __init__(self, container: Container) -> None:
        self._container = container

    def emit(self, event: AuditEvent) -> None:
        self._container.audit.emit(event)


class Container:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings)
        self.redis: Redis | None = None
        if settings.redis.url:
            self.redis = connect_redis(settings.redis.url.get_secret_value())
        if tracing.ENABLED:  # SQL and Redis spans; nothing is attached when tracing is off
            from arcana.adapters.tracing_hooks import instrument_engine, instrument_redis

            instrument_engine(self.db.engine, "sqlite" if settings.is_sqlite else "postgresql")
            if self.redis is not None:
                instrument_redis(self.redis)
        self.cache: Cache = (
            RedisCache(self.redis, settings.redis.prefix)
            if self.redis is not None
            else MemoryCache()
        )
        self._commit_listeners: list[Callable[[list[DomainEvent]], None]] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.jwt_key = settings.jwt_key()
        self.tokens = JwtAccessTokens(
            self.jwt_key,
            settings.auth.jwt_issuer,
            settings.auth.jwt_audience,
            settings.auth.access_token_ttl,
        )
        # Audit first: every service below reports to the plugin host.
        self.audit_sink = build_audit(settings, self.db)
        self.audit: AuditSink = self.audit_sink
        self._late_audit = _LateAudit(self)
        self.plugins = PluginService(
            self.audit_sink.registry,
            self.audit_sink.audit_log,
            self.audit,
            RedisPluginReloadBroadcast(self.redis, settings.redis.prefix)
            if self.redis is not None
            else NullPluginReloadBroadcast(),
        )
        self._build_auth(settings)
        self.products = ProductService(
            self.uow,
            ProductCache(
                self.cache,
                settings.cache.ttl,
                on_hit=CACHE_REQUESTS.labels("product", "hit").inc,
                on_miss=CACHE_REQUESTS.labels("product", "miss").inc,
            ),
            self._late_audit,
            read_uow=self.read_uow,
        )
        self.queue: JobQueue = self._build_queue()
        self.jobs = JobService(self.queue)
        self.mailer: Mailer = build_mailer(
            reveal(settings.mail.smtp_url), settings.mail.sender, settings.var_dir
        )
        self.notifications = NotificationService(
            self.mailer, self.users, self.sealer, settings.auth.reset_token_ttl
        )
        self.events = EventBus(
            settings,
            self.db,
            self.redis,
            build_event_handlers(DeferredJobs(lambda: self.queue)),
            lambda: self.queue,
        )

        self.metrics_sampler = MetricsSampler(
            self.db,
            lambda: self.queue,
            self.redis,
            self.events.stream,
            self.ready,
            settings.observability.metrics_sample_seconds,
        )

    def _build_auth(self, settings: Settings) -> None:
        self.passwords = HashingSlots(
            Argon2PasswordHasher(
                settings.passwords.argon2_memory_kib,
                settings.passwords.argon2_time_cost,
                settings.passwords.argon2_parallelism,
            ),
            settings.passwords.hash_slots or os.cpu_count() or 1,
            settings.passwords.hash_wait_seconds,
        )
        self.sealer = AesGcmSealer(self.jwt_key)
        self.attempt_quota: AttemptQuota = (
            RedisAttemptQuota(self.redis, settings.redis.prefix)
            if self.redis is not None
            else MemoryAttemptQuota()
        )
        self.generations = TokenGenerationCache(
            self.read_uow, self.cache, settings.auth.access_token_ttl
        )
        self.identity = IdentityService(self.tokens, self.generations)
        self.login_limiter: LoginLimiter = (
            RedisLoginLimiter(
                self.redis,
                settings.redis.prefix,
                settings.limits.login_max_failures_per_account,
                settings.limits.login_max_failures_per_ip,
                settings.limits.login_window_seconds,
            )
            if self.redis is not None
            else MemoryLoginLimiter(
                settings.limits.login_max_failures_per_account,
                settings.limits.login_max_failures_per_ip,
                settings.limits.login_window_seconds,
            )
        )
        self.users = UserService(self.uow, self.passwords, self.generations, read_uow=self.read_uow)
        self.auth = AuthService(
            self.uow,
            self.users,
            self.passwords,
            self.tokens,
            self.generations,
            self.login_limiter,
            self._late_audit,
            AuthPolicy(
                settings.auth.refresh_token_ttl,
                settings.auth.refresh_idle_ttl,
                settings.auth.reset_token_ttl,
                settings.auth.refresh_reuse_grace_seconds,
                access_token_ttl=settings.auth.access_token_ttl,
                register_limit_per_ip=settings.limits.register_per_ip,
                reset_limit_per_email=settings.limits.reset_per_email,
                reset_limit_per_ip=settings.limits.reset_per_ip,
            ),
            self.attempt_quota,
            self.sealer,
        )
        sync: UserSync = (
            WebhookUserSync(settings.user_sync.url.get_secret_value())
            if settings.user_sync.url
            else NullUserSync()
        )
        self.user_sync = UserSyncService(self.uow, sync)

    # Periodic job hooks, called by the ``sync.*`` job handlers; each returns rows handled.
    # They stay here while the outbox purge has no port of its own (wiring, issue 15 item 1).
    async def sync_pending_users(self) -> int:
        report = await self.user_sync.sync_pending_users()
        return report.synced + report.failed

    async def cleanup_tokens(self) -> int:
        """Dead tokens and sessions, and outbox rows published longer ago than
        ``ARCANA_OUTBOX_RETENTION_SECONDS``."""
        cutoff = utcnow() - timedelta(seconds=self.settings.events.outbox_retention_seconds)
        purged = await SqlOutbox(self.db).purge_published(cutoff)
        return await self.auth.cleanup_tokens() + purged

    def _build_queue(self) -> JobQueue:
        s = self.settings
        if s.effective_queue_backend == "redis":
            if self.redis is None:
                raise ValueError("ARCANA_QUEUE_BACKEND=redis needs ARCANA_REDIS_URL")
            if s.jobs.partitions > 1:
                return PartitionedRedisJobQueue(
                    self.redis, s.redis.prefix, s.jobs.partitions, finished_ttl=s.jobs.finished_ttl
                )
            return RedisJobQueue(self.redis, s.redis.prefix, finished_ttl=s.jobs.finished_ttl)
        return SqlJobQueue(
            self.db, finished_ttl=s.jobs.finished_ttl, poll_interval=s.jobs.poll_interval
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Container:
        return cls(settings)

    # -- unit of work ---------------------------------------------------------------------
    def uow(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.db, after_commit=self._on_commit)

    def read_uow(self) -> SqlUnitOfWork:
        """A unit of work for reads only (no transaction round trips on PostgreSQL)."""
        return SqlUnitOfWork(self.db, read_only=True)

    def on_commit(self, listener: Callable[[list[DomainEvent]], None]) -> None:
        """Called (synchronously, after commit) with the events a transaction recorded;
        used to wake the outbox relay at once instead of waiting for its next poll."""
        self._commit_listeners.append(listener)

    def _on_commit(self, events: list[DomainEvent]) -> None:
        for listener in self._commit_listeners:
            try:
                listener(events)
            except Exception:
                log.exception("commit listener failed")

    # -- life cycle -----------------------------------------------------------------------
    async def start(self, *, migrate_embedded: bool = True) -> None:
        """Embedded SQLite migrates itself so one command runs the service."""
        if migrate_embedded and self.settings.is_sqlite:
            await self.migrate()
        if self.redis is not None:
            await prepare_redis(self.redis)

    async def migrate(self) -> None:
        # Alembic is imported only by the commands that migrate (start-up time of the others).
        # Being imported late, after logging is set up, it would announce each of its plugins
        # at INFO: that is not news for a service log.
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
        from arcana.adapters.migrator import migrate

        await migrate(self.db)

    def spawn(self, name: str, task: BackgroundTask) -> None:
        """Run a background loop until ``close()``; a crash is logged and the loop restarted."""

        async def supervised() -> None:
            delay = 0.1
            while not self._stop.is_set():
                try:
                    await task(self._stop)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("background task %s crashed; restarting in %.1fs", name, delay)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), delay)
                    delay = min(delay * 2, 5.0)

        self._tasks.append(asyncio.create_task(supervised(), name=name))

    async def stop_background(self, timeout: float | None = None) -> None:
        self._stop.set()
        if not self._tasks:
            return
        wait = self.settings.shutdown_timeout if timeout is None else timeout
        _done, pending = await asyncio.wait(self._tasks, timeout=wait)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()

    async def ready(self) -> dict[str, Any]:
        checks: dict[str, Any] = {"database": await self.db.ping()}
        if self.redis is not None:
            try:
                checks["redis"] = bool(await self.redis.ping())
            except Exception:
                checks["redis"] = False
        return checks

    async def close(self) -> None:
        await self.stop_background()
        self.passwords.close()
        await self.products.cache.aclose()
        await self.queue.close()
        await self.db.dispose()
        if self.redis is not None:
            await self.redis.aclose()
