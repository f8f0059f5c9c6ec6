"""A partition count recorded in Redis and checked when a process starts.

Where the job queue's and the event stream's keys live depends on their partition counts
(``ARCANA_QUEUE_PARTITIONS``, ``ARCANA_EVENTS_PARTITIONS``; see ``partitions.py``). A process
started with another count than the one the stored jobs or events were written under would not
see them: they would wait, unseen, until the old count came back. So the count in use is
recorded (``<prefix>:queue-layout``, ``<prefix>:events-layout``), and a process that runs them
(``arcana serve``, ``arcana worker``) whose count differs from the recorded one refuses to
start while the recorded layout still holds work (jobs to run, events not yet handled). Once
none is left, the new count is recorded and the process starts. The other commands only warn of
a difference: that is how an operator lists an old layout's dead jobs, with its count (and
retries them: they move to the recorded layout, ``jobqueue/layout.py``). Dead jobs and events
left under the old layout are logged, not waited for: they stay readable with the old count,
and one that fails again on retry would never drain.

Before the counts were recorded, only the historical layout (one partition) could hold work
unless someone had changed the count already, so an unrecorded layout is checked as one
partition.

A drained layout is not enough: a process still running with the old count would go on
writing under it. So each process that runs the queue or the stream is also recorded in the
same hash while it runs (field ``alive:<process>``: its count and when the record expires,
renewed every ``PRESENCE_SECONDS / 3`` by ``keep_present``, removed when it stops), and a start
with another count is refused while one of those records is live. The check and the record
are one script on one key, so two processes with different counts that start at the same
instant cannot both pass: the second finds the first. A process that died without stopping
holds a change back until its record expires (``PRESENCE_SECONDS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

FIELD = "partitions"
PRESENCE_SECONDS = 30.0
"""How long a running process's record lasts without renewal."""
_ATTEMPTS = 5

# KEYS[1]: the layout's hash. ARGV: this process ('' for none), its count, the mode, and for
# "join" the recorded count it checked ('' for none), for "join" and "renew" the record's
# lifetime in ms. Each mode first drops the expired process records and finds the live ones
# with another count ("others": count, processes, ...).
#   probe: {recorded count or false, others}
#   join:  {0, others} if others run; {0} if the recorded count is no longer the one checked;
#          else the count recorded, this process recorded, {1}
#   renew: this process recorded again, {1, others}
_PRESENCE = """
local key, member, count, mode = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mine = 'alive:' .. member
local seen, others = {}, {}
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  local f = fields[i]
  if string.sub(f, 1, 6) == 'alive:' then
    local c, expires = string.match(fields[i + 1], '^(%d+) (%d+)$')
    if c == nil or tonumber(expires) <= now then
      redis.call('HDEL', key, f)
    elseif c ~= count and f ~= mine then
      if seen[c] == nil then
        seen[c] = #others + 1
        others[#others + 1] = c
        others[#others + 1] = 0
      end
      others[seen[c] + 1] = others[seen[c] + 1] + 1
    end
  end
end
if mode == 'probe' then
  return {redis.call('HGET', key, 'partitions'), others}
end
local record = count .. ' ' .. string.format('%.0f', now + tonumber(ARGV[5]))
if mode == 'renew' then
  redis.call('HSET', key, mine, record)
  return {1, others}
end
if #others > 0 then
  return {0, others}
end
if (redis.call('HGET', key, 'partitions') or '') ~= ARGV[4] then
  return {0}
end
redis.call('HSET', key, 'partitions', count)
if member ~= '' then
  redis.call('HSET', key, mine, record)
end
return {1}
"""

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
    writes: str = ""
    """Where a command with another count writes, when not under its own count (the queue:
    ``RecordedLayoutWrites``); said in ``note_layout``'s warning."""


def process_name() -> str:
    """This process among the others recorded: host, pid and a random part (pids repeat)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _others(flat: list[Any]) -> dict[int, int]:
    """The script's ``others``: processes running by count."""
    return {int(_text(flat[i])): int(flat[i + 1]) for i in range(0, len(flat), 2)}


def _running_elsewhere(layout: Layout, partitions: int, others: dict[int, int]) -> str:
    running = ", ".join(f"{n} with {layout.setting}={count}" for count, n in sorted(others.items()))
    return (
        f"{layout.setting} is {partitions}, but other processes run the {layout.name} with "
        f"another count ({running}), and would go on using their layout. Start this one with "
        f"their count, or stop them first (a process that ended without stopping is forgotten "
        f"{PRESENCE_SECONDS:.0f} s after it was last seen)."
    )


async def check_layout(
    redis: Redis,
    layout: Layout,
    partitions: int,
    member: str = "",
    *,
    presence_seconds: float = PRESENCE_SECONDS,
) -> None:
    """Record ``partitions`` as the layout, and ``member`` (a ``process_name``, unless empty)
    as a process running with it, unless processes with another count run, or another
    recorded layout still holds work (then raise ``LayoutChanged``, saying what to do)."""
    script = redis.register_script(_PRESENCE)
    lifetime = str(int(presence_seconds * 1000))
    for _attempt in range(_ATTEMPTS):
        raw, flat = await script(keys=[layout.key], args=[member, partitions, "probe"])
        if flat:
            raise LayoutChanged(_running_elsewhere(layout, partitions, _others(flat)))
        recorded = int(raw) if raw is not None else 1
        if recorded != partitions:
            waiting, dead = await layout.left_behind(recorded)
            if waiting:
                raise LayoutChanged(
                    f"{layout.setting} is {partitions}, but {waiting} {layout.waiting} "
                    f"are stored under {recorded} partition(s), where a process with "
                    f"{partitions} would not see them. Run {layout.runs_with} with "
                    f"{layout.setting}={recorded} until {layout.drained_when}, then change it."
                )
            if dead:
                log.warning(
                    "%d %s stay under the old layout of %d partition(s); they are listed with "
                    "%s=%d",
                    dead,
                    layout.dead,
                    recorded,
                    layout.setting,
                    recorded,
                )
        checked = "" if raw is None else _text(raw)
        joined = await script(
            keys=[layout.key], args=[member, partitions, "join", checked, lifetime]
        )
        if int(joined[0]) == 1:
            return
        if len(joined) > 1:  # another count started between the probe and now
            raise LayoutChanged(_running_elsewhere(layout, partitions, _others(joined[1])))
        # Another process recorded a count between the probe and now: check again against
        # what it recorded.
    raise LayoutChanged(
        f"The {layout.name} layout's recorded count changed {_ATTEMPTS} times while this "
        f"process checked it; start it again."
    )


async def keep_present(
    redis: Redis,
    layout: Layout,
    partitions: int,
    member: str,
    stop: asyncio.Event,
    *,
    presence_seconds: float = PRESENCE_SECONDS,
) -> None:
    """Renew ``member``'s record every third of its lifetime until ``stop``, then remove it.
    A renewal that finds processes with another count running logs an error: one of them
    started while Redis was unreachable, or the checks raced a record's expiry. Redis errors
    are logged and retried at the next renewal."""
    script = redis.register_script(_PRESENCE)
    lifetime = str(int(presence_seconds * 1000))
    told: dict[int, int] = {}
    try:
        while not stop.is_set():
            try:
                _, flat = await script(
                    keys=[layout.key], args=[member, partitions, "renew", "", lifetime]
                )
                others = _others(flat)
                if others and others != told:
                    log.error("%s", _running_elsewhere(layout, partitions, others))
                told = others
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("%s layout: this process's record not renewed (%s)", layout.name, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), presence_seconds / 3)
    finally:
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
            await redis.hdel(layout.key, f"alive:{member}")


async def note_layout(redis: Redis, layout: Layout, partitions: int) -> int | None:
    """For a process that only inspects or changes a few items (the CLI's commands): neither
    record nor refuse, but say so when ``partitions`` differs from the recorded count, and
    return the recorded count (``None`` if none is). An operator lists or retries the dead
    jobs of an old layout this way, with the old count."""
    raw = await redis.hget(layout.key, FIELD)
    recorded = None if raw is None else int(raw)
    if recorded is not None and recorded != partitions:
        log.warning(
            "%s is %d, but the %s layout in use is recorded as %d partition(s): this command "
            "sees what is stored under %d%s",
            layout.setting,
            partitions,
            layout.name,
            recorded,
            partitions,
            f"; {layout.writes}" if layout.writes else "",
        )
    return recorded


async def check_layout_at_start(
    redis: Redis, layout: Layout, partitions: int, *, member: str | None
) -> int | None:
    """When a process starts: ``check_layout`` for one that runs the queue or the stream
    (``arcana serve``, ``arcana worker``: ``member`` is its ``process_name``), ``note_layout``
    for any other (``member`` None). The service starts while Redis is down (reads, logins and
    writes go on; jobs and events wait in the outbox), so an unreachable Redis skips the check
    with a warning instead of stopping the start; the next start checks again, and
    ``keep_present`` records this process once Redis answers. Returns the recorded count
    (``partitions`` after a check; ``None`` if none is recorded or Redis is unreachable)."""
    try:
        if member is not None:
            await check_layout(redis, layout, partitions, member)
            return partitions
        return await note_layout(redis, layout, partitions)
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        log.warning(
            "%s layout not checked: Redis unreachable at start-up (%s); %s=%d is used as "
            "configured",
            layout.name,
            exc,
            layout.setting,
            partitions,
        )
        return None
