"""Limits that a burst cannot beat (issue 13, first part)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from arcana.adapters.login_limiter import MemoryLoginLimiter
from arcana.api.app import create_app
from arcana.config import Settings
from arcana.lifecycle import Lifecycle
from tests.auth_support import PASSWORD, register_and_login, run_reset_requests
from tests.conftest import truncate_all
from tests.security.conftest import AUTH, ClientFactory, hashes

WRONG = "Wrong-Password-1"


async def _login(client: httpx.AsyncClient, email: str, password: str = WRONG) -> int:
    resp = await client.post(f"{AUTH}/login", json={"email": email, "password": password})
    if resp.status_code == 429:
        assert int(resp.headers["Retry-After"]) >= 1
        assert resp.json()["code"] == "RATE_LIMITED"
    return resp.status_code


async def test_login_burst_on_one_account_gets_at_most_the_account_limit(
    make_client: ClientFactory,
) -> None:
    async with make_client(password_hash_wait_seconds=30) as (client, _):
        u = await register_and_login(client)
        before = hashes("verify")
        codes = await asyncio.gather(*(_login(client, u["email"]) for _ in range(300)))
        verified = hashes("verify") - before
        assert verified <= 10, verified
        assert codes.count(401) <= 10
        assert codes.count(429) >= 290
        assert set(codes) <= {401, 429}
        # Locked: even the right password waits for the window.
        assert await _login(client, u["email"], PASSWORD) == 429


async def test_login_burst_from_one_address_gets_at_most_the_address_limit(
    make_client: ClientFactory,
) -> None:
    async with make_client(login_max_failures_per_ip=10, password_hash_wait_seconds=30) as (
        client,
        _,
    ):
        u = await register_and_login(client)
        before = hashes("verify")
        codes = await asyncio.gather(
            *(_login(client, f"guess-{i}@example.com") for i in range(300))
        )
        assert hashes("verify") - before <= 10
        assert codes.count(429) >= 290
        assert await _login(client, u["email"], PASSWORD) == 429


async def test_change_password_burst_gets_at_most_the_account_limit(
    make_client: ClientFactory,
) -> None:
    async with make_client(password_hash_wait_seconds=30) as (client, _):
        u = await register_and_login(client)
        headers = {"Authorization": f"Bearer {u['access_token']}"}

        async def attempt() -> int:
            resp = await client.post(
                f"{AUTH}/change-password",
                json={"current_password": WRONG, "new_password": "Brand-New-Pass-7"},
                headers=headers,
            )
            return resp.status_code

        before = hashes("verify")
        codes = await asyncio.gather(*(attempt() for _ in range(100)))
        assert hashes("verify") - before <= 10
        assert codes.count(429) >= 90


async def test_embedded_limiter_keeps_a_locked_account_locked_under_a_flood() -> None:
    limiter = MemoryLoginLimiter(10, 1_000_000, window_seconds=900, max_entries=1000)
    for _ in range(10):
        assert await limiter.reserve("victim@example.com", "10.0.0.1") == 0
    assert await limiter.reserve("victim@example.com", "10.0.0.1") > 0
    for i in range(20_000):  # many addresses and accounts, far past the table's size
        await limiter.reserve(f"x{i}@example.com", f"10.1.{i // 250}.{i % 250}")
    assert await limiter.reserve("victim@example.com", "10.9.9.9") > 0


async def test_register_is_limited_per_address(make_client: ClientFactory) -> None:
    async with make_client(register_limit_per_ip=3) as (client, _):

        async def register(i: int) -> httpx.Response:
            return await client.post(
                f"{AUTH}/register",
                json={
                    "name": "N",
                    "email": f"r{i}-{uuid.uuid4().hex[:6]}@example.com",
                    "password": PASSWORD,
                },
            )

        codes = [(await register(i)).status_code for i in range(3)]
        assert codes == [201, 201, 201]
        resp = await register(4)
        assert resp.status_code == 429
        assert resp.json()["code"] == "RATE_LIMITED"
        assert 1 <= int(resp.headers["Retry-After"]) <= 3600
    async with make_client(register_limit_per_ip=3, client_ip="10.2.2.2") as (other, _):
        resp = await other.post(
            f"{AUTH}/register",
            json={"name": "N", "email": "someone@example.com", "password": PASSWORD},
        )
        assert resp.status_code == 201


async def test_forgot_password_is_limited_per_email_silently_and_per_address(
    make_client: ClientFactory,
) -> None:
    async with make_client(reset_limit_per_email=3, reset_limit_per_ip=5) as (client, container):
        u = await register_and_login(client)
        for _ in range(5):
            resp = await client.post(f"{AUTH}/forgot-password", json={"email": u["email"]})
            assert resp.status_code == 202  # the 4th and 5th too: nothing is revealed
        await run_reset_requests(container)
        from sqlalchemy import func, select

        from arcana.adapters.tables import outbox

        async with container.db.engine.connect() as conn:
            jobs = await conn.scalar(
                select(func.count())
                .select_from(outbox)
                .where(outbox.c.event_type == "email.password_reset")
            )
        assert jobs == 3
        resp = await client.post(f"{AUTH}/forgot-password", json={"email": "x@example.com"})
        assert resp.status_code == 429
        assert resp.json()["code"] == "RATE_LIMITED"
        assert int(resp.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_hashing_slots_answer_503_instead_of_queueing(make_client: ClientFactory) -> None:
    # Hashing slots are per process whatever the backend, so one backend is enough.
    async with make_client(
        password_hash_slots=1,
        password_hash_wait_seconds=0.05,
        argon2_memory_kib=65536,
        argon2_time_cost=3,
    ) as (client, _):
        responses = await asyncio.gather(
            *(
                client.post(
                    f"{AUTH}/register",
                    json={"name": "N", "email": f"s{i}@example.com", "password": PASSWORD},
                )
                for i in range(8)
            )
        )
        codes = [r.status_code for r in responses]
        assert 201 in codes
        busy = [r for r in responses if r.status_code == 503]
        assert busy, codes
        assert busy[0].json()["code"] == "SERVICE_UNAVAILABLE"
        assert int(busy[0].headers["Retry-After"]) >= 1


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_register_and_reset_limits_are_shared_between_processes(
    settings: Settings,
) -> None:
    """Two instances on one Redis prefix share the per-address budgets."""
    await truncate_all(settings.database.url.get_secret_value())
    limited = settings.replace(register_limit_per_ip=3, reset_limit_per_ip=2)
    a_process, b_process = Lifecycle.build(limited), Lifecycle.build(limited)
    a = a_process.app
    b = b_process.app
    try:
        clients = [
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(c), client=("10.3.3.3", 1)),
                base_url="http://test",
            )
            for c in (a, b)
        ]
        codes = []
        for i in range(4):
            resp = await clients[i % 2].post(
                f"{AUTH}/register",
                json={"name": "N", "email": f"shared{i}@example.com", "password": PASSWORD},
            )
            codes.append(resp.status_code)
        assert codes == [201, 201, 201, 429]
        resets = [
            (await clients[i % 2].post(f"{AUTH}/forgot-password", json={"email": "x@example.com"}))
            for i in range(3)
        ]
        assert [r.status_code for r in resets] == [202, 202, 429]
        for c in clients:
            await c.aclose()
    finally:
        await a_process.stop()
        await b_process.stop()
