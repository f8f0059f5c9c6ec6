"""Fixtures for tests that change settings or break Redis: a client on the test's backend with
some settings changed, and a private ``redis-server`` a test may stop or starve."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from arcana.api.app import create_app
from arcana.bootstrap import App
from arcana.config import Settings
from arcana.lifecycle import Lifecycle
from tests.conftest import truncate_all
from tests.private_redis import PrivateRedis

ClientFactory = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, App]]]


@pytest.fixture
def make_client(settings: Settings) -> ClientFactory:
    """``make_client(client_ip=..., **overrides)``: the app on the test's backend with the
    settings ``overrides``, seen from ``client_ip``; yields the client and the app's services."""

    @asynccontextmanager
    async def factory(
        *, client_ip: str = "127.0.0.1", **overrides: Any
    ) -> AsyncIterator[tuple[httpx.AsyncClient, App]]:
        if not settings.is_sqlite:
            await truncate_all(settings.database.url.get_secret_value())
        process = Lifecycle.build(settings.replace(**overrides))
        await process.start(migrate_embedded=False)
        transport = httpx.ASGITransport(
            app=create_app(process.app), raise_app_exceptions=False, client=(client_ip, 4242)
        )
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                yield c, process.app
        finally:
            await process.stop()

    return factory


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    """A ``redis-server`` of this test alone (``.url``; ``.stop()`` is a real outage)."""
    server = PrivateRedis(tmp_path / "private-redis")
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def post_past_the_body_limit(
    app: Any, path: str, headers: list[tuple[bytes, bytes]]
) -> list[dict[str, Any]]:
    """What ``app`` sends for a POST whose body runs past the body limit while its
    ``Content-Length`` says 2 bytes (the limit then trips while the body is read)."""
    chunk = b" " * 65536
    pending = [{"type": "http.request", "body": chunk, "more_body": True}] * 40
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [*headers, (b"content-length", b"2")],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    return sent


@asynccontextmanager
async def routes_broken(container: App) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose routes fail on their services dependency: what answers is a
    fast path (``ProductFastPaths``, ``MeFastPath``)."""
    from arcana.api.deps import get_services

    app = create_app(container)

    async def broken() -> None:
        raise RuntimeError("the route ran")

    app.dependency_overrides[get_services] = broken
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as own:
        yield own
