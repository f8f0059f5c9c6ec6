"""The admin event stream ends within 5 s of its token expiring, the user's tokens being
revoked, the admin role being revoked or the user being deleted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import uvicorn

from arcana.adapters.jwt_tokens import JwtAccessTokens
from arcana.api.app import create_app
from arcana.bootstrap import App
from arcana.config import Settings
from arcana.lifecycle import Lifecycle
from tests.auth_support import bearer, login, register_and_login
from tests.conftest import truncate_all
from tests.process import free_port
from tests.security.conftest import AUTH

STREAM = "/api/v1/events/stream"


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[tuple[str, App]]:
    if not settings.is_sqlite:
        await truncate_all(settings.database.url.get_secret_value())
    process = Lifecycle.build(settings)
    container = process.app
    await process.start(migrate_embedded=False)
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(
            create_app(container), host="127.0.0.1", port=port, lifespan="off", log_config=None
        )
    )
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        assert not task.done(), "server failed to start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", container
    finally:
        container.events.close_streams()
        srv.should_exit = True
        await asyncio.wait_for(task, 15)
        await process.stop()


async def _stream_ends_after(
    base: str,
    container: App,
    action: Callable[[httpx.AsyncClient, dict[str, str]], Awaitable[None]],
    token_ttl: int | None = None,
) -> None:
    """Opens the stream as a fresh admin (tokens live 15 min unless ``token_ttl``), runs
    ``action``, and requires the stream to end by itself within 5 s."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        u = await register_and_login(client)
        user = await container.users.grant_role(u["email"], "admin")
        tokens = await login(client, u["email"])
        if token_ttl is not None:
            s = container.settings
            short = JwtAccessTokens(
                container.auth_area.jwt_key, s.auth.jwt_issuer, s.auth.jwt_audience, token_ttl
            )
            tokens["access_token"] = short.issue(user.id, user.roles, user.generation).token
        async with client.stream("GET", STREAM, headers=bearer(tokens["access_token"])) as resp:
            assert resp.status_code == 200
            lines = resp.aiter_lines()
            assert (await anext(lines)).startswith(": connected")
            await action(client, {**u, **tokens})

            async def drain() -> None:
                async for _ in lines:
                    pass

            await asyncio.wait_for(drain(), 5.5)  # the stream ended by itself


async def test_stream_ends_when_its_token_expires(live: tuple[str, App]) -> None:
    async def nothing(client: httpx.AsyncClient, u: dict[str, str]) -> None:
        return None

    await _stream_ends_after(*live, nothing, token_ttl=2)


async def test_stream_ends_on_logout_all(live: tuple[str, App]) -> None:
    async def logout_all(client: httpx.AsyncClient, u: dict[str, str]) -> None:
        other = await login(client, u["email"])
        resp = await client.post(f"{AUTH}/logout-all", headers=bearer(other["access_token"]))
        assert resp.status_code == 204

    await _stream_ends_after(*live, logout_all)


async def test_stream_ends_when_the_admin_role_is_revoked(live: tuple[str, App]) -> None:
    base, container = live

    async def revoke(client: httpx.AsyncClient, u: dict[str, str]) -> None:
        await container.users.revoke_role(u["email"], "admin")

    await _stream_ends_after(base, container, revoke)


async def test_stream_ends_when_the_user_is_deleted(live: tuple[str, App]) -> None:
    base, container = live

    async def delete(client: httpx.AsyncClient, u: dict[str, str]) -> None:
        await container.users.delete_user(u["email"])

    await _stream_ends_after(base, container, delete)


async def test_stream_ends_when_its_session_ends(live: tuple[str, App]) -> None:
    async def logout(client: httpx.AsyncClient, u: dict[str, str]) -> None:
        resp = await client.post(f"{AUTH}/logout", json={"refresh_token": u["refresh_token"]})
        assert resp.status_code == 204

    await _stream_ends_after(*live, logout)
