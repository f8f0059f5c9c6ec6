"""Fixtures of the security suite: a client on the test's backend with settings changed, and
a private Redis a test may break."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from arcana.api.app import create_app
from arcana.bootstrap import App
from arcana.config import Settings
from arcana.lifecycle import Lifecycle
from tests.conftest import truncate_all, wait_for
from tests.process import free_port

AUTH = "/api/v1/auth"

ClientFactory = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, App]]]


@pytest.fixture
def make_client(settings: Settings) -> ClientFactory:
    @asynccontextmanager
    async def factory(
        *, client_ip: str = "127.0.0.1", **overrides: Any
    ) -> AsyncIterator[tuple[httpx.AsyncClient, App]]:
        if not settings.is_sqlite:
            await truncate_all(settings.database.url.get_secret_value())
        process = Lifecycle.build(settings.replace(**overrides))
        container = process.app
        await process.start(migrate_embedded=False)
        transport = httpx.ASGITransport(
            app=create_app(container), raise_app_exceptions=False, client=(client_ip, 4242)
        )
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                yield c, container
        finally:
            await process.stop()

    return factory


def hashes(op: str) -> float:
    """Argon2 operations started in this process so far (``arcana_password_hashes_total``)."""
    return REGISTRY.get_sample_value("arcana_password_hashes_total", {"op": op}) or 0.0


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = Redis(port=port)

    async def up() -> bool:
        try:
            return bool(await probe.ping())
        except Exception:
            return False

    try:
        await wait_for(up, timeout=10)
        await probe.aclose()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)
