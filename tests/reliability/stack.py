"""A whole deployment on this machine for fault tests: a private PostgreSQL cluster, a private
Redis, ``arcana serve`` and ``arcana worker`` processes sharing one var dir (mail files), and an
in-process ``App`` on the same database and Redis for assertions."""

from __future__ import annotations

import asyncio
import email
import email.policy
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from redis.exceptions import RedisError

from arcana.adapters.migrator import migrate
from arcana.bootstrap import App
from arcana.errors import ServiceUnavailable
from arcana.lifecycle import Lifecycle
from tests.auth_support import PASSWORD
from tests.conftest import base_settings
from tests.pgcluster import PrivateCluster
from tests.private_redis import PrivateRedis
from tests.process import ArcanaProcess, free_port
from tests.reliability.support import TEST_SECRET, arcana_env, process

# Short timeouts and leases so outages are noticed and healed in seconds.
FAST_ENV: dict[str, str] = {
    "ARCANA_DB_POOL_TIMEOUT": "1",
    "ARCANA_DB_CONNECT_TIMEOUT": "1",
    "ARCANA_DB_STATEMENT_TIMEOUT_MS": "3000",
    "ARCANA_DB_POOL_SIZE": "5",
    "ARCANA_DB_MAX_OVERFLOW": "5",
    "ARCANA_JOB_LEASE_SECONDS": "3",
    "ARCANA_JOB_REAP_INTERVAL": "0.5",
    "ARCANA_JOB_BACKOFF_BASE": "0.2",
    "ARCANA_JOB_BACKOFF_CAP": "1",
    "ARCANA_JOB_POLL_INTERVAL": "0.2",
    "ARCANA_EVENTS_RELAY_POLL_SECONDS": "0.5",
    "ARCANA_EVENTS_CLAIM_IDLE_MS": "2000",
    "ARCANA_EVENTS_MAX_DELIVERIES": "50",
    "ARCANA_SHUTDOWN_TIMEOUT": "5",
    "ARCANA_WORKER_CONCURRENCY": "8",
    "ARCANA_LOGIN_MAX_FAILURES_PER_IP": "100000",
    # The load comes from one address: per-address limits would turn it into 429s.
    "ARCANA_REGISTER_LIMIT_PER_IP": "1000000",
    "ARCANA_RESET_LIMIT_PER_IP": "1000000",
    "ARCANA_RESET_LIMIT_PER_EMAIL": "1000000",
    "ARCANA_LOG_LEVEL": "WARNING",
}

REQUEST_TIMEOUT = 15.0
"""Longer than any configured database/Redis timeout: a request that takes this long hangs."""


def read_mails(mail_dir: Path) -> list[email.message.EmailMessage]:
    out = []
    if not mail_dir.exists():
        return out
    for path in sorted(mail_dir.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        out.append(msg)  # type: ignore[arg-type]
    return out


class Stack:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.pg = PrivateCluster()
        self.redis = PrivateRedis(root / "redis")
        self.http_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.http_port}"
        self.db_url = ""
        self.env: dict[str, str] = {}
        self.serve: ArcanaProcess | None = None
        self.worker: ArcanaProcess | None = None
        self.process: Lifecycle | None = None
        self.container: App | None = None
        self.admin_token = ""
        self.restarts = 0

    # -- life cycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self.pg.start()
        self.redis.start()
        conn = await asyncpg.connect(self.pg.admin_dsn)
        try:
            await conn.execute("CREATE DATABASE arcana")
        finally:
            await conn.close()
        self.db_url = self.pg.url("arcana")
        settings = base_settings(
            database_url=self.db_url,
            redis_url=self.redis.url,
            jwt_secret=TEST_SECRET,
            var_dir=self.root / "var",
            db_pool_timeout=1.0,
            db_connect_timeout=1.0,
        )
        self.process = Lifecycle.build(settings)
        self.container = self.process.app
        await migrate(self.container.db)
        admin = await self.container.users.create_user(
            "admin@example.com", "Admin", PASSWORD, frozenset({"user", "admin"})
        )
        self.admin_token = self.container.auth_area.tokens.issue(admin.id, admin.roles, 0).token
        self.env = arcana_env(
            self.root,
            ARCANA_DATABASE_URL=self.db_url,
            ARCANA_REDIS_URL=self.redis.url,
            ARCANA_HTTP_PORT=str(self.http_port),
            **FAST_ENV,
        )
        self.start_serve()
        self.start_worker()
        await self.wait_serving()

    def start_serve(self) -> None:
        self.restarts += 1
        self.serve = process(["serve"], self.env, self.root, "serve.log").start()

    def start_worker(self) -> None:
        self.worker = process(["worker"], self.env, self.root, "worker.log").start()

    async def wait_serving(self, timeout: float = 90) -> None:
        assert self.serve is not None
        await asyncio.to_thread(self.serve.wait_http, f"{self.base_url}/readyz", timeout)

    async def close(self) -> None:
        for proc in (self.serve, self.worker):
            if proc is not None:
                proc.stop(timeout=10)
        if self.process is not None:
            await self.process.stop()
        self.redis.stop()
        self.pg.destroy()

    # -- observations -----------------------------------------------------------------------
    @property
    def mail_dir(self) -> Path:
        return self.root / "var" / "mail"

    def mails(self, subject_prefix: str) -> Counter[str]:
        """Mails by recipient whose subject starts with ``subject_prefix``."""
        return Counter(
            str(m["To"]).lower()
            for m in read_mails(self.mail_dir)
            if str(m["Subject"]).startswith(subject_prefix)
        )

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.pg.admin_dsn.rsplit("/", 1)[0] + "/arcana")
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def registered_emails(self) -> set[str]:
        rows = await self.sql("SELECT email FROM users WHERE email <> 'admin@example.com'")
        return {r["email"] for r in rows}

    async def unpublished_outbox(self) -> int:
        rows = await self.sql("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
        return int(rows[0]["n"])

    async def queue_stats(self) -> dict[str, Any]:
        assert self.container is not None
        return (await self.container.jobs.stats()).to_dict()

    async def drained(self) -> bool:
        """Outbox delivered, no job queued, scheduled, retrying or running."""
        if await self.unpublished_outbox():
            return False
        try:
            stats = await self.queue_stats()
        except (RedisError, ServiceUnavailable):  # this test's own connection, just after
            # Redis came back
            return False
        return not (stats["queued"] or stats["scheduled"] or stats["retrying"] or stats["running"])

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=REQUEST_TIMEOUT)

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


def new_email() -> str:
    return f"u-{uuid.uuid4().hex[:12]}@example.com"
