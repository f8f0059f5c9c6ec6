"""Queue fixtures shared by the job tests: one container per queue backend."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from arcana.bootstrap import App
from arcana.config import Settings
from arcana.lifecycle import Lifecycle
from tests.conftest import REDIS_URL, base_settings

QUEUE_BACKENDS = ["redis", "sqlite", "postgres"]


async def truncate_jobs(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("TRUNCATE jobs RESTART IDENTITY")
    finally:
        await conn.close()


def queue_settings(
    request: pytest.FixtureRequest, kind: str, tmp_path: Path, **kw: Any
) -> Settings:
    """Settings whose queue backend is ``kind``: Redis (SQLite beside it), SQLite, or
    PostgreSQL with ``ARCANA_QUEUE_BACKEND=database``."""
    var_dir = tmp_path / "var"
    if kind == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return base_settings(database_url=url, queue_backend="database", var_dir=var_dir, **kw)
    template: Path = request.getfixturevalue("sqlite_template")
    db_path = tmp_path / "arcana.db"
    if not db_path.exists():
        shutil.copy(template, db_path)
    extra: dict[str, Any] = {}
    if kind == "redis":
        prefix: str = request.getfixturevalue("redis_session")
        extra = {"redis_url": REDIS_URL, "redis_prefix": f"{prefix}-{uuid.uuid4().hex[:8]}"}
    elif kind == "rediscluster":
        url = request.getfixturevalue("redis_cluster").url
        extra = {"redis_url": url, "redis_prefix": f"arcana-{uuid.uuid4().hex[:8]}"}
    return base_settings(
        database_url=f"sqlite+aiosqlite:///{db_path}", var_dir=var_dir, **extra, **kw
    )


async def open_container(settings: Settings) -> AsyncIterator[App]:
    if not settings.is_sqlite:
        await truncate_jobs(settings.database.url.get_secret_value())
    c_process = Lifecycle.build(settings)
    c = c_process.app
    await c_process.start(migrate_embedded=False)
    try:
        yield c
    finally:
        await c_process.stop()
