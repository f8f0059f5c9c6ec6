"""The event stream's partition count, recorded in Redis and checked when a process starts
(``partition_layout.py`` says why)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from arcana.adapters.events.bus import event_streams
from arcana.adapters.events.redis_stream import GROUP
from arcana.adapters.partition_layout import Layout, check_layout


def events_layout(redis: Redis, prefix: str) -> Layout:
    return Layout(
        name="events",
        key=f"{prefix}:events-layout",
        setting="ARCANA_EVENTS_PARTITIONS",
        waiting="event(s) not yet handled",
        drained_when="the relay has published the outbox and the consumers have handled "
        "every event",
        dead="dead event(s)",
        runs_with="the API servers and workers",
        left_behind=_left_behind_under(redis, prefix),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _unhandled(redis: Redis, stream: str) -> int:
    """Events of ``stream`` that group ``arcana`` has not handled: delivered and not yet
    acknowledged, plus not yet delivered."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no such stream: nothing was ever published to it
        return 0
    group = next((g for g in groups if _text(g["name"]) == GROUP), None)
    if group is None:  # consumers create the group from the start: every entry is for them
        return int(await redis.xlen(stream))
    undelivered = group.get("lag")
    if undelivered is None:  # Redis cannot tell (entries deleted): is there one at least?
        last = _text(group["last-delivered-id"])
        after = await redis.xrange(stream, min=f"({last}", max="+", count=1)
        undelivered = len(after or [])
    return int(group["pending"]) + int(undelivered)


def _left_behind_under(redis: Redis, prefix: str) -> Callable[[int], Awaitable[tuple[int, int]]]:
    async def under(partitions: int) -> tuple[int, int]:
        waiting = dead = 0
        for stream in event_streams(prefix, partitions):
            waiting += await _unhandled(redis, stream)
            dead += int(await redis.xlen(f"{stream}:dead"))
        return waiting, dead

    return under


async def check_events_layout(redis: Redis, prefix: str, partitions: int) -> None:
    """Record ``partitions`` as the event stream's layout, unless another recorded layout
    still holds events not yet handled (then raise ``LayoutChanged``)."""
    await check_layout(redis, events_layout(redis, prefix), partitions)
