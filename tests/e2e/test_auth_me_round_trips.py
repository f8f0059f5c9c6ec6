"""``GET /auth/me``: what one request costs in database statements and Redis commands
(counted, never timed), and that its token check is exact across processes.

Backends: the embedded SQLite file, PostgreSQL with Redis, and PostgreSQL without Redis (the
token state then lives in each process's memory, so only a read of the database can see a
revocation made by another process).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from arcana.adapters.driver_statements import sqlite_driver
from arcana.bootstrap import App
from arcana.config import Settings
from arcana.lifecycle import Lifecycle
from tests.auth_support import bearer, login, register_and_login
from tests.conftest import backend_settings


@pytest.fixture(params=["embedded", "postgres", "postgres-no-redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    if backend == "postgres-no-redis":
        return backend_settings("postgres", tmp_path, request).replace(redis_url=None)
    return backend_settings(backend, tmp_path, request)


class Wire:
    """What reaches the database and Redis: every statement SQLAlchemy runs on the engine,
    every statement of the SQLite reader threads' connections (SQLAlchemy's and those run on
    the driver directly, seen by sqlite3's trace callback), every query asyncpg runs outside a
    prepared statement of SQLAlchemy's (``BEGIN``, ``COMMIT``, ``ROLLBACK``, pings, ``SET``,
    and statements run on its connection directly), every Redis command."""

    def __init__(self, container: App) -> None:
        self.statements: Counter[str] = Counter()
        self.asyncpg: list[str] = []
        self.redis = 0
        db = container.db
        self._engines = [db.engine.sync_engine]
        for engine in self._engines:
            event.listen(engine, "before_cursor_execute", self._statement)
        self._traced: list[Any] = []
        self._reader_engine: Any = None
        if db.sqlite_reads is not None:
            # Every reader thread's connection: those open now, and any a thread opens later.
            for conn in db.sqlite_reads._connections:
                self._trace(sqlite_driver(conn))
            self._reader_engine = db.sqlite_reads._engine
            event.listen(self._reader_engine, "connect", self._on_connect)
        self._loggers: list[Any] = []
        if not db.is_sqlite:
            # Every pooled connection (the test opened them all before counting).
            pool: Any = db.engine.sync_engine.pool
            for record in list(pool._pool._items):
                conn = record.driver_connection
                conn.add_query_logger(self._query)
                self._loggers.append(conn)
        redis = container.infra.redis
        if redis is not None:
            original = redis.execute_command

            async def counted(*args: Any, **kwargs: Any) -> Any:
                self.redis += 1
                return await original(*args, **kwargs)

            redis.execute_command = counted  # type: ignore[method-assign]
            self._redis = (redis, original)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements[statement.split(None, 1)[0].upper()] += 1

    def _traced_statement(self, statement: str) -> None:
        self._statement(None, None, statement)

    def _trace(self, driver: Any) -> None:
        driver.set_trace_callback(self._traced_statement)
        self._traced.append(driver)

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        self._trace(dbapi_connection)

    def _query(self, record: Any) -> None:
        self.asyncpg.append(record.query)

    def close(self) -> None:
        for engine in self._engines:
            event.remove(engine, "before_cursor_execute", self._statement)
        for conn in self._loggers:
            conn.remove_query_logger(self._query)
        if self._reader_engine is not None:
            event.remove(self._reader_engine, "connect", self._on_connect)
        for driver in self._traced:
            driver.set_trace_callback(None)
        if hasattr(self, "_redis"):
            redis, original = self._redis
            redis.execute_command = original


@pytest.fixture
def wire(container: App) -> Iterator[Any]:
    created: list[Wire] = []

    def start() -> Wire:
        created.append(Wire(container))
        return created[-1]

    yield start
    for w in created:
        w.close()


async def test_me_is_one_select_and_nothing_else(
    client: httpx.AsyncClient, container: App, wire: Any
) -> None:
    user = await register_and_login(client)
    headers = bearer(user["access_token"])
    # Warm: statements prepared, the token verified once, every pooled connection open.
    await asyncio.gather(*(client.get("/api/v1/auth/me", headers=headers) for _ in range(8)))
    counted = wire()
    n = 5
    for _ in range(n):
        r = await client.get("/api/v1/auth/me", headers=headers)
        assert r.status_code == 200, r.text
    await asyncio.sleep(0.05)  # asyncpg hands its query log to the loop
    # The user's row and the token's state (generation, ended session) in one SELECT; on
    # PostgreSQL in autocommit (no BEGIN / ROLLBACK around it), with no pool pre-ping, run on
    # the driver's connection directly (asyncpg logs it; SQLAlchemy runs nothing); on SQLite
    # on a reader thread's connection.
    if container.db.is_sqlite:
        assert dict(counted.statements) == {"SELECT": n}
        assert counted.asyncpg == []
    else:
        assert dict(counted.statements) == {}
        assert [q.split(None, 1)[0].upper() for q in counted.asyncpg] == ["SELECT"] * n
    assert counted.redis == 0


async def test_me_sees_revocations_made_by_another_process(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    user = await register_and_login(client)
    old = bearer(user["access_token"])
    assert (await client.get("/api/v1/auth/me", headers=old)).status_code == 200
    # Another process over the same database (and Redis, if any): its own caches.
    async with Lifecycle.running(settings, migrate_embedded=False) as other:
        from arcana.api.app import create_app

        transport = httpx.ASGITransport(app=create_app(other.app))
        async with httpx.AsyncClient(transport=transport, base_url="http://other") as c2:
            # Logout-all there: this process's next request must see it.
            r = await c2.post("/api/v1/auth/logout-all", headers=old)
            assert r.status_code == 204, r.text
            assert (await client.get("/api/v1/auth/me", headers=old)).status_code == 401

            # A session ended there: that session's access token dies here at once.
            tokens = await login(client, user["email"])
            session = bearer(tokens["access_token"])
            assert (await client.get("/api/v1/auth/me", headers=session)).status_code == 200
            r = await c2.post(
                "/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}
            )
            assert r.status_code == 204, r.text
            assert (await client.get("/api/v1/auth/me", headers=session)).status_code == 401

            # A token issued after the revocations works.
            fresh = bearer((await login(client, user["email"]))["access_token"])
            assert (await client.get("/api/v1/auth/me", headers=fresh)).status_code == 200


# PostgreSQL only: SQLite reads go to reader threads with connections of their own, no pool.
@pytest.mark.parametrize("backend", ["postgres", "postgres-no-redis"], indirect=True)
async def test_me_answers_503_when_no_connection_is_free(settings: Settings, backend: str) -> None:
    from arcana.api.app import create_app
    from tests.conftest import truncate_all

    await truncate_all(settings.database.url.get_secret_value())
    tight = settings.replace(db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.2)
    async with Lifecycle.running(tight, migrate_embedded=False) as process:
        transport = httpx.ASGITransport(app=create_app(process.app), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            user = await register_and_login(c)
            async with process.app.db.engine.connect():  # the only connection, held
                r = await c.get("/api/v1/auth/me", headers=bearer(user["access_token"]))
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "SERVICE_UNAVAILABLE"
            # And the pool lost nothing: the next request gets the connection back.
            r = await c.get("/api/v1/auth/me", headers=bearer(user["access_token"]))
            assert r.status_code == 200, r.text


# PostgreSQL only: there, the bearer's reads that arrive together share a round trip.
@pytest.mark.parametrize("backend", ["postgres", "postgres-no-redis"], indirect=True)
async def test_concurrent_reads_share_round_trips_and_each_sees_its_own_token(
    client: httpx.AsyncClient, container: App
) -> None:
    users = [await register_and_login(client) for _ in range(4)]
    # A second session of the first user, ended: its token must die inside a batch too.
    ended = await login(client, users[0]["email"])
    r = await client.post("/api/v1/auth/logout", json={"refresh_token": ended["refresh_token"]})
    assert r.status_code == 204, r.text
    reads = container.db.autocommit_reads
    assert reads is not None
    tokens = [u["access_token"] for u in users]
    await asyncio.gather(*(client.get("/api/v1/auth/me", headers=bearer(t)) for t in tokens * 2))
    before = sum(b.round_trips for b in reads._batches.values())
    asked = [*tokens * 5, *[ended["access_token"]] * 3]
    answers = await asyncio.gather(
        *(client.get("/api/v1/auth/me", headers=bearer(t)) for t in asked)
    )
    sent = sum(b.round_trips for b in reads._batches.values()) - before
    assert 0 < sent < len(asked)  # not a round trip each
    assert sum(b.rerun for b in reads._batches.values()) == 0
    emails = {u["access_token"]: u["email"] for u in users}
    for token, answer in zip(asked, answers, strict=True):
        if token == ended["access_token"]:
            assert answer.status_code == 401, answer.text
        else:
            assert answer.status_code == 200, answer.text
            assert answer.json()["email"] == emails[token]
