"""``ARCANA_EVENTS_PARTITIONS`` changed while the old streams still hold events not yet
handled: the process refuses to start instead of leaving those events unseen (real Redis, a
prefix per test)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from arcana.adapters.events.bus import event_streams
from arcana.adapters.events.layout import check_events_layout, events_layout
from arcana.adapters.events.redis_stream import GROUP
from arcana.adapters.partition_layout import FIELD, LayoutChanged
from arcana.lifecycle import Lifecycle
from tests.conftest import REDIS_URL, base_settings


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def prefix(redis_session: str) -> str:
    return f"{redis_session}-evlayout-{uuid.uuid4().hex[:8]}"


async def recorded(redis: Redis, prefix: str) -> int | None:
    raw = await redis.hget(events_layout(prefix).key, FIELD)
    return None if raw is None else int(raw)


async def test_a_new_stream_records_its_count(redis: Redis, prefix: str) -> None:
    await check_events_layout(redis, prefix, 4)
    assert await recorded(redis, prefix) == 4
    await check_events_layout(redis, prefix, 4)
    assert await recorded(redis, prefix) == 4


async def test_events_not_yet_handled_keep_a_new_count_from_starting(
    redis: Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Published and never read (no group yet), then read and not acknowledged: both hold
    the change back. Handled ones do not, and dead ones are logged."""
    [stream] = event_streams(prefix, 1)  # the historical key, from before the count was kept
    await redis.xadd(stream, {"e": "1"})
    await redis.xadd(stream, {"e": "2"})
    with pytest.raises(LayoutChanged) as raised:
        await check_events_layout(redis, prefix, 3)
    assert "ARCANA_EVENTS_PARTITIONS is 3, but 2 event(s) not yet handled" in str(raised.value)
    assert "ARCANA_EVENTS_PARTITIONS=1" in str(raised.value)
    assert await recorded(redis, prefix) is None

    await redis.xgroup_create(stream, GROUP, id="0")
    read = await redis.xreadgroup(GROUP, "c1", {stream: ">"}, count=10)
    ids = [entry_id for entry_id, _fields in read[0][1]]
    assert len(ids) == 2
    with pytest.raises(LayoutChanged, match="2 event"):  # delivered, not acknowledged
        await check_events_layout(redis, prefix, 3)
    await redis.xack(stream, GROUP, ids[0])
    with pytest.raises(LayoutChanged, match="1 event"):
        await check_events_layout(redis, prefix, 3)
    await redis.xadd(stream, {"e": "3"})  # one more, not delivered yet
    with pytest.raises(LayoutChanged, match="2 event"):
        await check_events_layout(redis, prefix, 3)
    more = await redis.xreadgroup(GROUP, "c1", {stream: ">"}, count=10)
    await redis.xack(stream, GROUP, ids[1], *(i for i, _f in more[0][1]))
    await redis.xadd(f"{stream}:dead", {"e": "x"})
    with caplog.at_level(logging.WARNING, logger="arcana.layout"):
        await check_events_layout(redis, prefix, 3)
    assert await recorded(redis, prefix) == 3
    logged = [r.getMessage() for r in caplog.records]
    assert any("1 dead event(s) stay under the old layout" in m for m in logged)


async def test_a_start_with_another_count_refuses_while_events_wait(
    redis: Redis, prefix: str, tmp_path: Path
) -> None:
    """The check runs where every process starts."""
    await check_events_layout(redis, prefix, 2)
    await redis.xadd(event_streams(prefix, 2)[1], {"e": "1"})
    settings = base_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}",
        redis_url=REDIS_URL,
        redis_prefix=prefix,
        var_dir=tmp_path / "var",
        events_partitions=1,
    )
    process = Lifecycle.build(settings)
    try:
        with pytest.raises(LayoutChanged, match="ARCANA_EVENTS_PARTITIONS=2"):
            await process.start()
    finally:
        await process.stop()
    assert await recorded(redis, prefix) == 2
