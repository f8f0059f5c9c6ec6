"""Composition root: the only module that builds adapters and hands them to services.

One wiring function per area takes the settings (through ``Infrastructure``), what it needs
from the areas built before it, and explicit overrides, and returns a small frozen record of
what the area exposes. ``build_app`` calls them in dependency order, so nothing is bound
late:

    infrastructure → plugins (the audit sink) → auth → catalog → jobs (the queue) → events

Tests and benchmarks call a wiring function, or ``build_app`` with ``Overrides``, to put a
double in place at construction. Nothing here runs at import time, connects, or starts a
loop: ``arcana.lifecycle`` does that, in one documented order.

What only Redis needs (redis-py and the adapters on it) is imported where Redis is configured,
never at the top: a process without Redis (embedded, PostgreSQL alone) would otherwise pay
about 0.14 s of every start for it (``make bench-cli``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from arcana import tracing
from arcana.adapters.cache import MemoryCache
from arcana.adapters.database import Database
from arcana.adapters.events import EventBus
from arcana.adapters.events.outbox import SqlOutbox
from arcana.adapters.jobqueue.sql import SqlJobQueue
from arcana.adapters.jwt_tokens import JwtAccessTokens
from arcana.adapters.login_limiter import MemoryAttemptQuota, MemoryLoginLimiter
from arcana.adapters.mail import build_mailer
from arcana.adapters.metrics_sampler import MetricsSampler
from arcana.adapters.passwords import Argon2PasswordHasher, HashingSlots
from arcana.adapters.plugin_broadcast import NullPluginReloadBroadcast
from arcana.adapters.plugins import PluginAuditSink, build_audit
from arcana.adapters.product_repositories import GroupCommitStockChanges, SqlStockChanges
from arcana.adapters.schema_version import schema_is_current
from arcana.adapters.sealing import AesGcmSealer
from arcana.adapters.unit_of_work import SqlUnitOfWork
from arcana.adapters.user_repositories import (
    GroupCommitSessionStarts,
    SqlSessionStarts,
    UnitOfWorkSessionStarts,
)
from arcana.adapters.user_sync import NullUserSync, WebhookUserSync
from arcana.config import Settings, reveal
from arcana.domain.audit import AuditSink
from arcana.domain.delivery import CommitListeners, JobEnqueuer
from arcana.domain.jobs import JobQueue
from arcana.domain.mail import Mailer
from arcana.domain.plugins import PluginReloadBroadcast
from arcana.domain.ports import Cache
from arcana.domain.products import StockChanges
from arcana.domain.users import AttemptQuota, LoginLimiter, SessionStarts, UserSync
from arcana.metrics import CACHE_REQUESTS
from arcana.services.app import Services
from arcana.services.auth import AuthPolicy, AuthService
from arcana.services.completion import finish_abandoned_writes
from arcana.services.events import build_event_handlers
from arcana.services.health import HealthService, Probe
from arcana.services.identity import IdentityService
from arcana.services.jobs import JobService
from arcana.services.maintenance import MaintenanceService
from arcana.services.notifications import NotificationService
from arcana.services.plugins import PluginService
from arcana.services.products import ProductCache, ProductService
from arcana.services.users import TokenGenerationCache, UserService, UserSyncService

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from arcana.adapters.partition_layout import Layout

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Overrides:
    """Doubles put in place of real adapters when the app is built (tests, benchmarks)."""

    audit: AuditSink | None = None
    """Where services report audit events. The plugin host is still built (its service lists
    and reloads plugins); it just does not receive the events."""
    queue: JobQueue | None = None
    mailer: Mailer | None = None
    cache: Cache | None = None
    user_sync: UserSync | None = None


# -- infrastructure ------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Infrastructure:
    """What every area shares: the settings, the database, Redis (absent in embedded mode),
    the cache and the listeners told about each commit."""

    settings: Settings
    db: Database
    redis: Redis | None
    cache: Cache
    commits: CommitListeners = field(default_factory=CommitListeners)

    def uow(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.db, after_commit=self.commits)

    def read_uow(self) -> SqlUnitOfWork:
        """A unit of work for reads only (no transaction round trips on PostgreSQL)."""
        return SqlUnitOfWork(self.db, read_only=True)

    def stock_changes(self) -> StockChanges | None:
        """Group commit on a SQLite file, one statement on PostgreSQL; ``None`` (a unit of work
        per change) on an in-memory SQLite, which a second connection would not see."""
        if self.db.group_commit is not None:
            return GroupCommitStockChanges(self.db.group_commit, self.commits)
        if not self.db.is_sqlite:
            return SqlStockChanges(self.db, self.commits)
        return None

    def session_starts(self) -> SessionStarts:
        """A login's writes: by the group commit on a SQLite file, one statement on
        PostgreSQL, a unit of work on an in-memory SQLite."""
        if self.db.group_commit is not None:
            return GroupCommitSessionStarts(self.db.group_commit)
        if not self.db.is_sqlite:
            return SqlSessionStarts(self.db)
        return UnitOfWorkSessionStarts(self.uow)


def wire_infrastructure(settings: Settings, *, cache: Cache | None = None) -> Infrastructure:
    db = Database(settings)
    redis: Redis | None = None
    if settings.redis.url:
        from arcana.adapters.redis_client import connect_redis

        redis = connect_redis(settings.redis.url.get_secret_value())
    if tracing.ENABLED:  # SQL and Redis spans; nothing is attached when tracing is off
        from arcana.adapters.tracing_hooks import instrument_engine, instrument_redis

        instrument_engine(db.engine, "sqlite" if settings.is_sqlite else "postgresql")
        if redis is not None:
            instrument_redis(redis)
    if cache is None and redis is not None:
        from arcana.adapters.redis_cache import RedisCache

        cache = RedisCache(redis, settings.redis.prefix)
    elif cache is None:
        cache = MemoryCache()
    return Infrastructure(settings, db, redis, cache)


# -- plugins (the audit sink every service reports to) -------------------------------------
@dataclass(frozen=True, eq=False)
class PluginsArea:
    sink: PluginAuditSink
    """The plugin host's sink; reloading plugins changes what it runs, never the object."""
    audit: AuditSink
    """What services are given: the sink, or the override."""
    plugins: PluginService


def wire_plugins(infra: Infrastructure, *, audit: AuditSink | None = None) -> PluginsArea:
    settings = infra.settings
    sink = build_audit(settings, infra.db)
    reporting: AuditSink = audit if audit is not None else sink
    broadcast: PluginReloadBroadcast = NullPluginReloadBroadcast()
    if infra.redis is not None:
        from arcana.adapters.redis_plugin_broadcast import RedisPluginReloadBroadcast

        broadcast = RedisPluginReloadBroadcast(infra.redis, settings.redis.prefix)
    plugins = PluginService(sink.registry, sink.audit_log, reporting, broadcast)
    return PluginsArea(sink, reporting, plugins)


# -- auth ----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class AuthArea:
    jwt_key: str
    tokens: JwtAccessTokens
    passwords: HashingSlots
    sealer: AesGcmSealer
    attempt_quota: AttemptQuota
    login_limiter: LoginLimiter
    generations: TokenGenerationCache
    identity: IdentityService
    users: UserService
    auth: AuthService
    user_sync: UserSyncService


def wire_auth(
    infra: Infrastructure, audit: AuditSink, *, user_sync: UserSync | None = None
) -> AuthArea:
    s = infra.settings
    jwt_key = s.jwt_key()
    tokens = JwtAccessTokens(
        jwt_key, s.auth.jwt_issuer, s.auth.jwt_audience, s.auth.access_token_ttl
    )
    pw = s.passwords
    passwords = HashingSlots(
        Argon2PasswordHasher(pw.argon2_memory_kib, pw.argon2_time_cost, pw.argon2_parallelism),
        pw.hash_slots or os.cpu_count() or 1,
        pw.hash_wait_seconds,
    )
    sealer = AesGcmSealer(jwt_key)
    redis = infra.redis
    lim = s.limits
    limits = (
        lim.login_max_failures_per_account,
        lim.login_max_failures_per_ip,
        lim.login_window_seconds,
    )
    attempt_quota: AttemptQuota
    login_limiter: LoginLimiter
    if redis is not None:
        from arcana.adapters.redis_login_limiter import RedisAttemptQuota, RedisLoginLimiter

        attempt_quota = RedisAttemptQuota(redis, s.redis.prefix)
        login_limiter = RedisLoginLimiter(redis, s.redis.prefix, *limits)
    else:
        attempt_quota = MemoryAttemptQuota()
        login_limiter = MemoryLoginLimiter(*limits)
    generations = TokenGenerationCache(infra.read_uow, infra.cache, s.auth.access_token_ttl)
    users = UserService(infra.uow, passwords, generations, read_uow=infra.read_uow)
    auth = AuthService(
        infra.uow,
        users,
        passwords,
        tokens,
        generations,
        login_limiter,
        audit,
        AuthPolicy(
            s.auth.refresh_token_ttl,
            s.auth.refresh_idle_ttl,
            s.auth.reset_token_ttl,
            s.auth.refresh_reuse_grace_seconds,
            access_token_ttl=s.auth.access_token_ttl,
            register_limit_per_ip=lim.register_per_ip,
            reset_limit_per_email=lim.reset_per_email,
            reset_limit_per_ip=lim.reset_per_ip,
        ),
        attempt_quota,
        sealer,
        session_starts=infra.session_starts(),
    )
    if user_sync is None:
        url = reveal(s.user_sync.url)
        user_sync = WebhookUserSync(url) if url else NullUserSync()
    return AuthArea(
        jwt_key=jwt_key,
        tokens=tokens,
        passwords=passwords,
        sealer=sealer,
        attempt_quota=attempt_quota,
        login_limiter=login_limiter,
        generations=generations,
        identity=IdentityService(tokens, generations),
        users=users,
        auth=auth,
        user_sync=UserSyncService(infra.uow, user_sync),
    )


# -- catalog -------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CatalogArea:
    products: ProductService


def wire_catalog(infra: Infrastructure, audit: AuditSink) -> CatalogArea:
    cache = ProductCache(
        infra.cache,
        infra.settings.cache.ttl,
        on_hit=CACHE_REQUESTS.incrementer("product", "hit"),
        on_miss=CACHE_REQUESTS.incrementer("product", "miss"),
    )
    return CatalogArea(
        ProductService(
            infra.uow, cache, audit, read_uow=infra.read_uow, stock=infra.stock_changes()
        )
    )


# -- jobs ----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class JobsArea:
    queue: JobQueue
    jobs: JobService
    mailer: Mailer
    notifications: NotificationService
    maintenance: MaintenanceService
    """The use cases the job handlers run live in ``notifications``, ``maintenance`` and
    ``AuthService.issue_reset``; ``worker/jobs.py`` maps each job type to one of them."""


def build_queue(infra: Infrastructure) -> JobQueue:
    s = infra.settings
    if s.effective_queue_backend == "redis":
        if infra.redis is None:
            raise ValueError("ARCANA_QUEUE_BACKEND=redis needs ARCANA_REDIS_URL")
        from arcana.adapters.jobqueue.layout import redis_queue

        return redis_queue(
            infra.redis, s.redis.prefix, s.jobs.partitions, finished_ttl=s.jobs.finished_ttl
        )
    return SqlJobQueue(
        infra.db, finished_ttl=s.jobs.finished_ttl, poll_interval=s.jobs.poll_interval
    )


def wire_jobs(
    infra: Infrastructure,
    auth: AuthArea,
    *,
    queue: JobQueue | None = None,
    mailer: Mailer | None = None,
) -> JobsArea:
    s = infra.settings
    if queue is None:
        queue = build_queue(infra)
    if mailer is None:
        mailer = build_mailer(reveal(s.mail.smtp_url), s.mail.sender, s.var_dir)
    return JobsArea(
        queue=queue,
        jobs=JobService(queue),
        mailer=mailer,
        notifications=NotificationService(mailer, auth.users, auth.sealer, s.auth.reset_token_ttl),
        maintenance=MaintenanceService(
            auth.auth,
            auth.user_sync,
            SqlOutbox(infra.db),
            timedelta(seconds=s.events.outbox_retention_seconds),
        ),
    )


# -- events --------------------------------------------------------------------------------
def wire_events(infra: Infrastructure, jobs: JobEnqueuer) -> EventBus:
    """Delivery of committed events: the relay, the Redis consumers (or the in-process
    dispatcher), the live feed. The reactions enqueue on ``jobs``, built before."""
    return EventBus(infra.settings, infra.db, infra.redis, build_event_handlers(jobs), jobs)


# -- operations ----------------------------------------------------------------------------
def _redis_probe(redis: Redis) -> Probe:
    async def ping() -> bool:
        try:
            return bool(await redis.ping())
        except Exception:
            return False

    return ping


def wire_health(infra: Infrastructure) -> HealthService:
    probes: dict[str, Probe] = {"database": infra.db.ping}
    if infra.redis is not None:
        probes["redis"] = _redis_probe(infra.redis)
    return HealthService(probes)


# -- the whole process ---------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class App(Services):
    """The services of one process (what entry points see, as ``Services``) and the adapters
    behind them, which only the lifecycle and tests reach."""

    infra: Infrastructure
    auth_area: AuthArea
    plugins_area: PluginsArea
    jobs_area: JobsArea
    events: EventBus
    metrics_sampler: MetricsSampler

    # Short names for what tests and benchmarks reach most often.
    @property
    def db(self) -> Database:
        return self.infra.db

    @property
    def redis(self) -> Redis | None:
        return self.infra.redis

    @property
    def cache(self) -> Cache:
        return self.infra.cache

    @property
    def audit(self) -> AuditSink:
        return self.plugins_area.audit

    def uow(self) -> SqlUnitOfWork:
        return self.infra.uow()

    def read_uow(self) -> SqlUnitOfWork:
        return self.infra.read_uow()


def build_app(settings: Settings, overrides: Overrides | None = None) -> App:
    """Every area, in dependency order. Nothing connects yet."""
    o = overrides or Overrides()
    infra = wire_infrastructure(settings, cache=o.cache)
    plugins = wire_plugins(infra, audit=o.audit)
    auth = wire_auth(infra, plugins.audit, user_sync=o.user_sync)
    catalog = wire_catalog(infra, plugins.audit)
    jobs = wire_jobs(infra, auth, queue=o.queue, mailer=o.mailer)
    events = wire_events(infra, jobs.queue)
    health = wire_health(infra)
    sampler = MetricsSampler(
        infra.db,
        jobs.queue,
        infra.redis,
        events.stream,
        health.ready,
        settings.observability.metrics_sample_seconds,
    )
    return App(
        settings=settings,
        identity=auth.identity,
        users=auth.users,
        auth=auth.auth,
        user_sync=auth.user_sync,
        products=catalog.products,
        plugins=plugins.plugins,
        queue=jobs.queue,
        jobs=jobs.jobs,
        notifications=jobs.notifications,
        maintenance=jobs.maintenance,
        feed=events.feed,
        commits=infra.commits,
        health=health,
        infra=infra,
        auth_area=auth,
        plugins_area=plugins,
        jobs_area=jobs,
        events=events,
        metrics_sampler=sampler,
    )


# -- opening and closing what was built (called by arcana.lifecycle) ------------------------
async def migrate(app: App) -> None:
    # Alembic is imported only by the commands that migrate (start-up time of the others).
    # Being imported late, after logging is set up, it would announce each of its plugins
    # at INFO: that is not news for a service log.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    from arcana.adapters.migrator import migrate as run_migrations

    await run_migrations(app.db)


def partition_layouts(app: App) -> list[tuple[Layout, int]]:
    """The recorded layouts this process uses, with its counts: the event stream's with
    Redis, and the queue's when the queue is on Redis (``adapters/partition_layout.py``)."""
    if app.redis is None:
        return []
    from arcana.adapters.events.layout import events_layout
    from arcana.adapters.jobqueue.layout import queue_layout

    prefix = app.settings.redis.prefix
    layouts = [(events_layout(app.redis, prefix), app.settings.events.partitions)]
    if app.settings.effective_queue_backend == "redis":
        layouts.append((queue_layout(app.redis, prefix), app.settings.jobs.partitions))
    return layouts


async def open_resources(
    app: App, *, migrate_embedded: bool = True, layout_member: str | None = None
) -> None:
    """Embedded SQLite migrates itself so one command runs the service (Alembic runs only
    when the schema is behind: ``schema_version.py``). ``layout_member``:
    this process runs the queue and the event stream (``arcana serve``, ``arcana worker``), so
    it records their partition counts, and itself as running with them, and refuses a changed
    count while the old layout holds work or other processes run with it
    (``adapters/partition_layout.py``); any other only notes a difference."""
    if migrate_embedded and app.settings.is_sqlite and not await schema_is_current(app.db):
        await migrate(app)
    if app.redis is not None:
        from arcana.adapters.partition_layout import check_layout_at_start
        from arcana.adapters.redis_client import prepare_redis

        await prepare_redis(app.redis)
        for layout, partitions in partition_layouts(app):
            recorded = await check_layout_at_start(
                app.redis, layout, partitions, member=layout_member
            )
            if layout.name == "queue" and recorded is not None and recorded != partitions:
                _queue_writes_to(app, recorded)


def _queue_writes_to(app: App, recorded: int) -> None:
    """A command whose queue count is not the recorded one: its job service reads what is
    stored under its own count, and enqueues and retries into the recorded layout
    (``RecordedLayoutWrites``)."""
    from arcana.adapters.jobqueue.layout import RecordedLayoutWrites, redis_queue
    from arcana.adapters.jobqueue.partitioned import PartitionedRedisJobQueue
    from arcana.adapters.jobqueue.redis import RedisJobQueue

    assert app.redis is not None
    stored = app.queue
    assert isinstance(stored, RedisJobQueue | PartitionedRedisJobQueue)
    s = app.settings
    target = redis_queue(app.redis, s.redis.prefix, recorded, finished_ttl=s.jobs.finished_ttl)
    app.jobs.queue = RecordedLayoutWrites(stored, target)


async def close_resources(app: App) -> None:
    """After the background loops have stopped: pools, clients and engines."""
    app.auth_area.passwords.close()
    await finish_abandoned_writes(app.settings.shutdown_timeout)
    await app.products.aclose()
    if app.jobs.queue is not app.queue:  # a command's writes to the recorded layout
        await app.jobs.queue.close()
    await app.queue.close()
    await app.db.dispose()
    if app.redis is not None:
        await app.redis.aclose()
