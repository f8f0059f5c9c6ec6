"""Shared fixtures.

Backends: tests that take ``settings``/``process``/``container``/``client`` run twice, against
``embedded`` (SQLite file + in-process cache) and ``postgres`` (a database created for this
run + Redis under a key prefix of this run). Pin one with
``@pytest.mark.parametrize("backend", ["postgres"], indirect=True)``.

Real servers only: PostgreSQL at ARCANA_TEST_PG_URL (default the local trust-auth server),
Redis at ARCANA_TEST_REDIS_URL (default db 9 of the local server).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from arcana.adapters.database import Database
from arcana.adapters.migrator import migrate
from arcana.adapters.tables import metadata
from arcana.api.app import create_app
from arcana.bootstrap import App, Overrides
from arcana.config import Settings
from arcana.lifecycle import Lifecycle
from tests.rediscluster.cluster import LocalCluster

PG_ADMIN_DSN = os.environ.get("ARCANA_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ARCANA_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
RUN_ID = uuid.uuid4().hex[:10]

# Cheap Argon2 parameters keep the suite fast; tests of hashing cost set their own.
FAST_ARGON2: dict[str, Any] = {"argon2_memory_kib": 1024, "argon2_time_cost": 1}


def base_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "jwt_secret": "test-secret-" + "x" * 40,
        "log_json": False,
        "grpc_port": 0,
        # Replays are reuse at once in tests; the concurrent-refresh test sets its own window.
        "refresh_reuse_grace_seconds": 0,
        # Suites register many users from one test address; tests of these limits set them.
        "register_limit_per_ip": 100_000,
        "reset_limit_per_ip": 100_000,
        "reset_limit_per_email": 100_000,
        **FAST_ARGON2,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# -- PostgreSQL ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
async def pg_url() -> AsyncIterator[str]:
    """A database created for this test run, migrated once, dropped at the end."""
    name = f"arcana_test_{RUN_ID}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    url = f"{base}/{name}"
    db = Database(base_settings(database_url=url))
    await migrate(db)
    await db.dispose()
    yield url
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def truncate_all(url: str) -> None:
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


async def end_server_sessions(url: str) -> int:
    """End (``pg_terminate_backend``) every server session of the app on ``url``'s database,
    as a server restart or an idle-session kill would; how many were ended."""
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(dsn)
    try:
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'arcana' AND datname = current_database()"
        )
    finally:
        await admin.close()
    return int(ended)


# -- Redis -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
async def redis_session() -> AsyncIterator[str]:
    """This run's key prefix; every key under it is deleted at the end."""
    prefix = f"arcana-test-{RUN_ID}"
    yield prefix
    redis = Redis.from_url(REDIS_URL)
    try:
        async for key in redis.scan_iter(match=f"*{prefix}*", count=1000):
            await redis.delete(key)
    finally:
        await redis.aclose()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A private 3-master + 3-replica Redis Cluster for this run, started on first use."""
    cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


# -- SQLite ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
async def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    db = Database(base_settings(database_url=f"sqlite+aiosqlite:///{path}"))
    await migrate(db)
    await db.dispose()
    return path


# -- per-test (sync where it resolves session fixtures by name: pytest-asyncio cannot do that
# from inside a running loop) ------------------------------------------------------
@pytest.fixture(params=["embedded", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Settings:
    return backend_settings(backend, tmp_path, request)


def backend_settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """The ``settings`` fixture's value for ``backend``, for fixtures that change some."""
    var_dir = tmp_path / "var"
    if backend == "embedded":
        template: Path = request.getfixturevalue("sqlite_template")
        db_path = tmp_path / "arcana.db"
        shutil.copy(template, db_path)
        return base_settings(database_url=f"sqlite+aiosqlite:///{db_path}", var_dir=var_dir)
    url: str = request.getfixturevalue("pg_url")
    prefix: str = request.getfixturevalue("redis_session")
    redis_url = REDIS_URL
    if backend == "cluster":  # PostgreSQL + the private Redis Cluster (tests/rediscluster/)
        redis_url = request.getfixturevalue("redis_cluster").url
    return base_settings(
        database_url=url,
        redis_url=redis_url,
        redis_prefix=f"{prefix}-{uuid.uuid4().hex[:8]}",
        var_dir=var_dir,
    )


@pytest.fixture
def doubles(request: pytest.FixtureRequest) -> Overrides:
    """Doubles for ``build_app``, from the test's ``@pytest.mark.overrides(name=factory)``
    (each factory is called once per test, e.g. ``audit=RecordingAuditSink``)."""
    marker = request.node.get_closest_marker("overrides")
    if marker is None:
        return Overrides()
    return Overrides(**{name: factory() for name, factory in marker.kwargs.items()})


@pytest.fixture
async def process(settings: Settings, doubles: Overrides) -> AsyncIterator[Lifecycle]:
    """A started process over this test's backend; its loops start only when a test asks
    (``process.start_api_loops()``, ``start_worker_loops()``, ``start_relay()``)."""
    if not settings.is_sqlite:
        await truncate_all(settings.database.url.get_secret_value())
    async with Lifecycle.running(settings, doubles, migrate_embedded=False) as p:
        yield p


@pytest.fixture
def container(process: Lifecycle) -> App:
    """The services of ``process`` and the adapters behind them."""
    return process.app


@pytest.fixture
async def client(container: App) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(container)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` (sync or async) until it returns a truthy value, or fail."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


async def insert_principals(container: App) -> None:
    """Stored users behind the fixed ids that ``tests/products_support.py`` mints tokens
    for (``admin-1``, ``user-1``): access tokens of users that do not exist are rejected."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from arcana.adapters.tables import users

    now = datetime.now(UTC)
    rows = [
        {
            "id": uid,
            "name": uid,
            "email": f"{uid}@example.com",
            "password_hash": "x",
            "roles": roles,
            "generation": 0,
            "sync_status": "SYNCED",
            "created_at": now,
            "updated_at": now,
        }
        for uid, roles in (("admin-1", "user,admin"), ("user-1", "user"))
    ]
    async with container.db.engine.begin() as conn:
        await conn.execute(insert(users), rows)


@pytest.fixture
async def seeded_principals(container: App) -> None:
    await insert_principals(container)
