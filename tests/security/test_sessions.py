"""Sessions that end when they are ended (issue 13, second part)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from redis.asyncio import Redis

from arcana.bootstrap import App
from arcana.config import Settings
from arcana.errors import InvalidCredentials
from arcana.rpc.gen.arcana.product.v1 import product_pb2 as pb
from arcana.rpc.gen.arcana.product.v1 import product_pb2_grpc as pb_grpc
from arcana.services.auth import AuthPolicy, AuthService, ClientInfo
from tests.auth_support import PASSWORD, bearer, login, register_and_login
from tests.private_redis import PrivateRedis
from tests.products_support import grpc_stub_for
from tests.security.conftest import AUTH, ClientFactory


async def _me(client: httpx.AsyncClient, token: str) -> int:
    return (await client.get(f"{AUTH}/me", headers=bearer(token))).status_code


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(f"{AUTH}/refresh", json={"refresh_token": token})


# -- refresh reuse ---------------------------------------------------------------------------
def test_refresh_reuse_is_strict_by_default() -> None:
    assert Settings(_env_file=None).auth.refresh_reuse_grace_seconds == 0  # type: ignore[call-arg]
    assert AuthPolicy(1, 1, 1).reuse_grace_seconds == 0


async def test_replaying_a_rotated_token_revokes_the_family_at_once(
    client: httpx.AsyncClient,
) -> None:
    u = await register_and_login(client)
    thief = (await _refresh(client, u["refresh_token"])).json()  # a stolen token, rotated
    assert (await _refresh(client, u["refresh_token"])).status_code == 401  # victim replays
    assert (await _refresh(client, thief["refresh_token"])).status_code == 401  # family dead
    assert await _me(client, thief["access_token"]) == 401  # and its access tokens at once


async def test_grace_covers_only_the_immediate_predecessor(make_client: ClientFactory) -> None:
    async with make_client(refresh_reuse_grace_seconds=60) as (client, _):
        u = await register_and_login(client)
        first = u["refresh_token"]
        second = (await _refresh(client, first)).json()
        third = (await _refresh(client, second["refresh_token"])).json()
        # ``second`` is the immediate predecessor of the live token: a lost race, no revocation.
        assert (await _refresh(client, second["refresh_token"])).status_code == 401
        assert await _me(client, third["access_token"]) == 200
        # ``first`` is older: reuse, the family ends even inside the window.
        assert (await _refresh(client, first)).status_code == 401
        assert (await _refresh(client, third["refresh_token"])).status_code == 401
        assert await _me(client, third["access_token"]) == 401


# -- session end kills access tokens --------------------------------------------------------
@pytest.fixture
async def grpc_stub(container: App) -> AsyncIterator[pb_grpc.ProductServiceStub]:
    async with grpc_stub_for(container) as stub:
        yield stub


async def _admin_session(client: httpx.AsyncClient, container: App) -> dict[str, Any]:
    u = await register_and_login(client)
    await container.users.grant_role(u["email"], "admin")
    return {**u, **(await login(client, u["email"]))}


async def _grpc_code(stub: pb_grpc.ProductServiceStub, token: str) -> grpc.StatusCode:
    try:
        await stub.CreateProduct(
            pb.CreateProductRequest(name="Lamp", price=1.0),
            metadata=(("authorization", f"Bearer {token}"),),
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_logout_kills_the_sessions_access_tokens_on_rest_and_grpc(
    client: httpx.AsyncClient, container: App, grpc_stub: pb_grpc.ProductServiceStub
) -> None:
    a = await _admin_session(client, container)
    other = await login(client, a["email"])
    assert await _grpc_code(grpc_stub, a["access_token"]) == grpc.StatusCode.OK
    resp = await client.post(f"{AUTH}/logout", json={"refresh_token": a["refresh_token"]})
    assert resp.status_code == 204
    assert await _me(client, a["access_token"]) == 401
    assert await _grpc_code(grpc_stub, a["access_token"]) == grpc.StatusCode.UNAUTHENTICATED
    assert await _me(client, other["access_token"]) == 200  # another session lives on


async def test_ending_a_session_kills_its_access_tokens(client: httpx.AsyncClient) -> None:
    u = await register_and_login(client)
    other = await login(client, u["email"])
    sessions = (await client.get(f"{AUTH}/sessions", headers=bearer(other["access_token"]))).json()
    target = next(s["id"] for s in sessions["data"] if not s["current"])
    resp = await client.delete(f"{AUTH}/sessions/{target}", headers=bearer(other["access_token"]))
    assert resp.status_code == 204
    assert await _me(client, u["access_token"]) == 401
    assert await _me(client, other["access_token"]) == 200


async def test_session_revocation_survives_a_cache_eviction(
    client: httpx.AsyncClient, container: App
) -> None:
    u = await register_and_login(client)
    await client.post(f"{AUTH}/logout", json={"refresh_token": u["refresh_token"]})
    await container.cache.delete(f"auth:gen:{u['id']}")  # evicted: reloaded from the database
    assert await _me(client, u["access_token"]) == 401


# -- login racing a password change --------------------------------------------------------
class GatedHasher:
    """The real hasher, paused inside ``verify`` until the test lets it go: the login has read
    the user and is hashing when the password change commits."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def verify(self, password_hash: str, password: str) -> bool:
        ok: bool = await self._inner.verify(password_hash, password)
        self.entered.set()
        await self.release.wait()
        return ok

    async def hash(self, password: str) -> str:
        result: str = await self._inner.hash(password)
        return result

    def needs_rehash(self, password_hash: str) -> bool:
        return bool(self._inner.needs_rehash(password_hash))

    def dummy_hash(self) -> str:
        return str(self._inner.dummy_hash())


async def test_login_racing_a_password_change_inserts_no_live_session(
    client: httpx.AsyncClient, container: App
) -> None:
    u = await register_and_login(client)
    gated = GatedHasher(container.auth_area.passwords)
    racing = AuthService(
        container.uow,
        container.users,
        gated,
        container.auth_area.tokens,
        container.auth_area.generations,
        container.auth_area.login_limiter,
        container.audit,
        AuthPolicy(3600, 3600, 1800),
        container.auth_area.attempt_quota,
        container.auth_area.sealer,
    )
    task = asyncio.create_task(racing.login(u["email"], PASSWORD, ClientInfo("10.0.0.9")))
    await asyncio.wait_for(gated.entered.wait(), 10)
    resp = await client.post(
        f"{AUTH}/change-password",
        json={"current_password": PASSWORD, "new_password": "Brand-New-Pass-7"},
        headers=bearer(u["access_token"]),
    )
    assert resp.status_code == 204
    gated.release.set()
    with pytest.raises(InvalidCredentials):
        await task
    fresh = await login(client, u["email"], "Brand-New-Pass-7")
    sessions = (await client.get(f"{AUTH}/sessions", headers=bearer(fresh["access_token"]))).json()
    assert len(sessions["data"]) == 1  # only the login after the change


# -- revocation when Redis refuses writes ----------------------------------------------------
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_revocation_stays_exact_when_redis_refuses_writes(
    make_client: ClientFactory, private_redis: PrivateRedis
) -> None:
    async with make_client(redis_url=private_redis.url) as (client, _):
        u = await register_and_login(client)
        assert await _me(client, u["access_token"]) == 200  # token state now cached
        admin = Redis.from_url(private_redis.url)
        try:
            # Out of memory with no eviction: every SET is refused, reads and DEL still work.
            await admin.config_set("maxmemory-policy", "noeviction")
            await admin.config_set("maxmemory", "1")
            resp = await client.post(f"{AUTH}/logout-all", headers=bearer(u["access_token"]))
            assert resp.status_code == 204
            assert await _me(client, u["access_token"]) == 401
        finally:
            await admin.config_set("maxmemory", "0")
            await admin.aclose()
