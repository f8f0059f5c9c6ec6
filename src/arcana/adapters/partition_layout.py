"""A partition count recorded in Redis and checked when a process starts.

Where the job queue's and the event stream's keys live depends on their partition counts
(``ARCANA_QUEUE_PARTITIONS``, ``ARCANA_EVENTS_PARTITIONS``; see ``partitions.py``). A process
started with another count than the one the stored jobs or events were written under would not
see them: they would wait, unseen, until the old count came back. So the count in use is
recorded (``<prefix>:queue-layout``, ``<prefix>:events-layout``), and a process that runs them
(``arcana serve``, ``arcana worker``) whose count differs from the recorded one refuses to
start while the recorded layout still holds work (jobs to run, events not yet handled). Once
none is left, the new count is recorded and the process starts. The other commands only warn of
a difference: that is how an operator lists an old layout's dead jobs, with its count. Dead
jobs and events left under the old layout are logged, not waited for: they stay readable with
the old count, and one that fails again on retry would never drain.

Before the counts were recorded, only the historical layout (one partition) could hold work
unless someone had changed the count already, so an unrecorded layout is checked as one
partition.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

FIELD = "partitions"

log = logging.getLogger("arcana.layout")


class LayoutChanged(RuntimeError):
    """The configured partition count differs from the recorded one, whose layout still
    holds work."""


@dataclass(frozen=True)
class Layout:
    """One recorded layout: where it is recorded and how an operator is told about it."""

    name: str
    """``queue`` or ``events``, for the logs."""
    key: str
    """The Redis hash holding the recorded count."""
    setting: str
    """The environment variable that sets the count."""
    waiting: str
    """What holds a change back, e.g. ``job(s) still to run``."""
    drained_when: str
    """When the old layout is drained, e.g. ``arcana jobs stats`` shows none queued."""
    dead: str
    """What is logged and left behind, e.g. ``dead job(s)``."""
    runs_with: str
    """Which processes must run with the old count to drain it, e.g. ``the workers``."""
    left_behind: Callable[[int], Awaitable[tuple[int, int]]]
    """``left_behind(count)``: the work waiting and the dead work stored under ``count``
    partitions."""


async def check_layout(redis: Redis, layout: Layout, partitions: int) -> None:
    """Record ``partitions`` as the layout, unless another recorded layout still holds work
    (then raise ``LayoutChanged``, saying how to drain it)."""
    raw = await redis.hget(layout.key, FIELD)
    recorded = int(raw) if raw is not None else 1
    if recorded != partitions:
        waiting, dead = await layout.left_behind(recorded)
        if waiting:
            raise LayoutChanged(
                f"{layout.setting} is {partitions}, but {waiting} {layout.waiting} "
                f"are stored under {recorded} partition(s), where a process with {partitions} "
                f"would not see them. Run {layout.runs_with} with {layout.setting}={recorded} "
                f"until {layout.drained_when}, then change it."
            )
        if dead:
            log.warning(
                "%d %s stay under the old layout of %d partition(s); they are listed with %s=%d",
                dead,
                layout.dead,
                recorded,
                layout.setting,
                recorded,
            )
    if raw is None or recorded != partitions:
        await redis.hset(layout.key, FIELD, str(partitions))


async def note_layout(redis: Redis, layout: Layout, partitions: int) -> None:
    """For a process that only inspects or changes a few items (the CLI's commands): neither
    record nor refuse, but say so when ``partitions`` differs from the recorded count. An
    operator lists or retries the dead jobs of an old layout this way, with the old count."""
    raw = await redis.hget(layout.key, FIELD)
    if raw is not None and int(raw) != partitions:
        log.warning(
            "%s is %d, but the %s layout in use is recorded as %d partition(s): this command "
            "sees what is stored under %d",
            layout.setting,
            partitions,
            layout.name,
            int(raw),
            partitions,
        )


async def check_layout_at_start(
    redis: Redis, layout: Layout, partitions: int, *, enforce: bool
) -> None:
    """When a process starts: ``check_layout`` for one that runs the queue or the stream
    (``enforce``: ``arcana serve``, ``arcana worker``), ``note_layout`` for any other. The
    service starts while Redis is down (reads, logins and writes go on; jobs and events wait
    in the outbox), so an unreachable Redis skips the check with a warning instead of stopping
    the start; the next start checks again."""
    try:
        if enforce:
            await check_layout(redis, layout, partitions)
        else:
            await note_layout(redis, layout, partitions)
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        log.warning(
            "%s layout not checked: Redis unreachable at start-up (%s); %s=%d is used as "
            "configured",
            layout.name,
            exc,
            layout.setting,
            partitions,
        )
