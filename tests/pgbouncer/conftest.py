"""The PgBouncer suite: PostgreSQL reached through a private PgBouncer in transaction mode
(``ARCANA_DATABASE_URL``), with ``ARCANA_DATABASE_DIRECT_URL`` for LISTEN, and Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from arcana.config import Settings
from tests.conftest import REDIS_URL, base_settings
from tests.pgbouncer.bouncer import PgBouncer


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[PgBouncer]:
    bouncer = PgBouncer().start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


def through(bouncer: PgBouncer, direct_url: str) -> str:
    return bouncer.url(direct_url.rsplit("/", 1)[1])


@pytest.fixture
def backend() -> str:
    return "postgres"


@pytest.fixture
def settings(pgbouncer: PgBouncer, pg_url: str, redis_session: str, tmp_path: Path) -> Settings:
    return base_settings(
        database_url=through(pgbouncer, pg_url),
        database_direct_url=pg_url,
        redis_url=REDIS_URL,
        redis_prefix=f"{redis_session}-{uuid.uuid4().hex[:8]}",
        var_dir=tmp_path / "var",
    )
