"""A database that goes away answers 503 problem+json, and the service recovers by itself.

Uses a private PostgreSQL cluster (see tests/pgcluster.py) that the test really stops and
starts again."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text

from arcana.adapters.migrator import migrate
from arcana.api.app import create_app
from arcana.lifecycle import Lifecycle
from tests.auth_support import PASSWORD
from tests.conftest import base_settings, wait_for
from tests.pgcluster import PrivateCluster

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    c = PrivateCluster()
    c.start()
    try:
        yield c
    finally:
        c.destroy()


async def test_database_down_gives_503_and_recovers(
    cluster: PrivateCluster, tmp_path: object
) -> None:
    settings = base_settings(
        database_url=cluster.url(), db_pool_timeout=1.0, db_connect_timeout=1.0
    )
    process = Lifecycle.build(settings)
    container = process.app
    await migrate(container.db)
    app = create_app(container)

    @app.get("/test/db")
    async def db_probe() -> dict[str, int]:
        async with container.uow() as uow:
            value = (await uow.session.execute(text("SELECT 1"))).scalar_one()
        return {"value": int(value)}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get("/test/db")).json() == {"value": 1}
            user = await container.users.create_user("outage@example.com", "Ada", PASSWORD)
            token = container.auth_area.tokens.issue(user.id, user.roles, user.generation).token
            me = {"Authorization": f"Bearer {token}"}
            assert (await c.get("/api/v1/auth/me", headers=me)).status_code == 200
            cluster.stop()
            # a route of the app, and /auth/me, which its fast path answers
            for resp in (await c.get("/test/db"), await c.get("/api/v1/auth/me", headers=me)):
                assert resp.status_code == 503, resp.text
                assert resp.headers["content-type"].startswith("application/problem+json")
                assert resp.json()["code"] == "SERVICE_UNAVAILABLE"
            ready = await c.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"] is False
            cluster.start()

            async def recovered() -> bool:
                return (await c.get("/test/db")).status_code == 200

            await wait_for(recovered, timeout=20, interval=0.2)
            assert (await c.get("/readyz")).status_code == 200
    finally:
        await process.stop()
