"""Real ``arcana serve`` processes: events committed while no relay runs are published when a
process starts; a commit in another process wakes the relay (NOTIFY, not the slow poll);
SIGTERM ends open event streams so the process exits promptly."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from arcana.bootstrap import App
from arcana.config import Settings
from tests.conftest import wait_for
from tests.events_support import commit_events, product_event, redis_for, stream_envelopes
from tests.process import ArcanaProcess, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("backend", ["postgres"], indirect=True),
    pytest.mark.usefixtures("seeded_principals"),
]


def serve(settings: Settings, cwd: Path, port: int, server: str = "uvicorn") -> ArcanaProcess:
    assert settings.redis.url is not None
    env = {
        "ARCANA_HTTP_SERVER": server,
        "ARCANA_ENV": "test",
        "ARCANA_DATABASE_URL": settings.database.url.get_secret_value(),
        "ARCANA_REDIS_URL": settings.redis.url.get_secret_value(),
        "ARCANA_REDIS_PREFIX": settings.redis.prefix,
        "ARCANA_JWT_SECRET": "test-secret-" + "x" * 40,
        "ARCANA_HTTP_PORT": str(port),
        "ARCANA_GRPC_PORT": "0",
        # Far longer than the test waits: only a NOTIFY can wake the relay in time.
        "ARCANA_EVENTS_RELAY_POLL_SECONDS": "600",
    }
    return ArcanaProcess(["serve"], env=env, cwd=cwd)


async def ids_in_stream(container: App) -> list[str]:
    return [e["id"] for e in await stream_envelopes(redis_for(container), container.events.stream)]


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
async def test_events_survive_a_killed_process_and_streams_end_on_sigterm(
    container: App, settings: Settings, tmp_path: Path, server: str
) -> None:
    port = free_port()
    proc = serve(settings, tmp_path, port, server).start()
    try:
        await asyncio.to_thread(proc.wait_http, f"http://127.0.0.1:{port}/healthz")
        live = product_event()
        await commit_events(container, live)  # no relay in this process: NOTIFY wakes the server
        await wait_for(lambda: _has(container, live.id), timeout=15)
        await wait_for(lambda: _none_pending(container), timeout=15)  # marked published too

        proc.kill()
        orphan = product_event("product.updated")
        await commit_events(container, orphan)
        assert await container.events.relay.pending() == 1

        proc = serve(settings, tmp_path, port, server).start()
        await asyncio.to_thread(proc.wait_http, f"http://127.0.0.1:{port}/healthz")
        await wait_for(lambda: _has(container, orphan.id), timeout=15)
        assert await ids_in_stream(container) == [live.id, orphan.id]

        await sigterm_ends_open_event_streams(container, proc, port)
        code = await asyncio.to_thread(proc.proc.wait, 15)  # type: ignore[union-attr]
        assert code == 0, proc.log()
    finally:
        proc.stop()


async def sigterm_ends_open_event_streams(container: App, proc: ArcanaProcess, port: int) -> None:
    token = container.auth_area.tokens.issue(
        "admin-1", frozenset({"user", "admin"}), generation=0
    ).token
    async with (
        httpx.AsyncClient(timeout=20) as http,
        http.stream(
            "GET",
            f"http://127.0.0.1:{port}/api/v1/events/stream",
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        lines = resp.aiter_lines()
        assert await anext(lines) == ": connected"
        event = product_event()
        await commit_events(container, event)
        async for line in lines:
            if line.startswith("data:"):
                assert event.id in line
                break
        proc.signal(signal.SIGTERM)
        rest = [line async for line in lines]  # ends: the server closed the stream
        assert all(not line.startswith("data:") for line in rest)


async def _none_pending(container: App) -> bool:
    return await container.events.relay.pending() == 0


async def _has(container: App, event_id: str) -> bool:
    return event_id in await ids_in_stream(container)
