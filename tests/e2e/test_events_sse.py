"""``GET /api/v1/events/stream`` over a real HTTP server: events committed after connecting
arrive as SSE frames, ``Last-Event-ID`` resumes, shutdown ends the stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from arcana.api.app import create_app
from arcana.bootstrap import App
from arcana.lifecycle import Lifecycle
from arcana.metrics import EVENTS_STREAM_CLIENTS
from tests.conftest import wait_for
from tests.events_support import commit_events, product_event
from tests.process import free_port

# Tokens below are minted for the stored users of this fixture.
pytestmark = pytest.mark.usefixtures("seeded_principals")


@pytest.fixture
async def server(process: Lifecycle, container: App) -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(
        create_app(container), host="127.0.0.1", port=port, lifespan="off", log_config=None
    )
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        assert not task.done(), "server failed to start"
        await asyncio.sleep(0.01)
    process.start_api_loops()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        container.events.close_streams()
        srv.should_exit = True
        await asyncio.wait_for(task, 15)


def admin_headers(container: App, **extra: str) -> dict[str, str]:
    token = container.auth_area.tokens.issue(
        "admin-1", frozenset({"user", "admin"}), generation=0
    ).token
    return {"Authorization": f"Bearer {token}", **extra}


class Frames:
    """Parses an SSE response into frames ``{"id", "event", "data"}`` and comments."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self) -> dict[str, Any]:
        frame: dict[str, Any] = {}
        async for line in self._lines:
            if line == "":
                if frame:
                    return frame
                continue
            if line.startswith(":"):
                frame.setdefault("comment", line[1:].strip())
                continue
            key, _, value = line.partition(":")
            frame[key] = value.removeprefix(" ")
        raise EOFError

    async def event(self) -> dict[str, Any]:
        while True:
            frame = await asyncio.wait_for(self.next(), 10)
            if "data" in frame:
                frame["data"] = json.loads(frame["data"])
                return frame


async def test_committed_event_arrives_as_a_server_sent_event(server: str, container: App) -> None:
    async with (
        httpx.AsyncClient(base_url=server, timeout=10) as http,
        http.stream("GET", "/api/v1/events/stream", headers=admin_headers(container)) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        frames = Frames(resp)
        assert (await frames.next())["comment"] == "connected"
        first, second = product_event(), product_event("product.deleted")
        await commit_events(container, first)
        await commit_events(container, second)
        got1, got2 = await frames.event(), await frames.event()
    assert got1["event"] == "product.created"
    assert got1["data"] == first.envelope()
    assert got2["data"] == second.envelope()
    assert got2["event"] == "product.deleted"
    assert got1["id"]
    assert got1["id"] != got2["id"]

    # Resume after the first: the second is replayed, then live events follow.
    third = product_event("product.updated")
    async with (
        httpx.AsyncClient(base_url=server, timeout=10) as http,
        http.stream(
            "GET",
            "/api/v1/events/stream",
            headers=admin_headers(container, **{"Last-Event-ID": got1["id"]}),
        ) as resp,
    ):
        frames = Frames(resp)
        assert (await frames.event())["data"]["id"] == second.id
        await commit_events(container, third)
        assert (await frames.event())["data"]["id"] == third.id
    # The client went away: the server side of the stream is gone too.
    await wait_for(lambda: EVENTS_STREAM_CLIENTS._value.get() == 0)


async def test_shutdown_ends_open_streams(server: str, process: Lifecycle, container: App) -> None:
    async with (
        httpx.AsyncClient(base_url=server, timeout=10) as http,
        http.stream("GET", "/api/v1/events/stream", headers=admin_headers(container)) as resp,
    ):
        frames = Frames(resp)
        await frames.next()
        process.drain()
        with pytest.raises(EOFError):
            await asyncio.wait_for(frames.next(), 10)


async def test_stream_needs_an_admin_and_a_valid_last_event_id(server: str, container: App) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=10) as http:
        r = await http.get("/api/v1/events/stream")
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        user = container.auth_area.tokens.issue("user-1", frozenset({"user"}), generation=0).token
        r = await http.get("/api/v1/events/stream", headers={"Authorization": f"Bearer {user}"})
        assert r.status_code == 403
        assert r.json()["code"] == "FORBIDDEN"
        r = await http.get(
            "/api/v1/events/stream",
            headers=admin_headers(container, **{"Last-Event-ID": "nope"}),
        )
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "VALIDATION_FAILED"
