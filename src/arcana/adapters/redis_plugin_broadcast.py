"""Plugin-reload broadcast across API processes, on Redis.

Redis pub/sub delivers a reload to the other processes at once, but a process that is
disconnected at that moment never sees the message. So every reload also increments a shared
generation counter, and each process compares it with the generation it last applied on a
slow poll: a missed message costs at most one poll interval, never a diverging plugin set.

On a Redis Cluster the message is a sharded one (``SPUBLISH``/``SSUBSCRIBE``): it goes only to
the shard that owns the channel's slot, where a plain ``PUBLISH`` is copied to every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from arcana.adapters.redis_client import is_cluster

log = logging.getLogger(__name__)


class RedisPluginReloadBroadcast:
    def __init__(self, redis: Redis, prefix: str, poll_seconds: float = 5.0) -> None:
        self._redis = redis
        self._channel = f"{prefix}:control:plugins"
        self._key = f"{prefix}:plugins:generation"
        self._origin = uuid.uuid4().hex
        self._poll = poll_seconds
        self._applied: int | None = None
        self._sharded = is_cluster(redis)

    async def _generation(self) -> int:
        value = await self._redis.get(self._key)
        return int(value) if value is not None else 0

    async def announce(self) -> None:
        try:
            generation = int(await self._redis.incr(self._key))
            self._applied = generation
            message = f"{generation}:{self._origin}"
            if self._sharded:
                await self._redis.spublish(self._channel, message)
            else:
                await self._redis.publish(self._channel, message)
        except (RedisError, OSError) as exc:
            log.warning("plugin reload not broadcast (Redis unreachable): %s", exc)

    async def listen(self, stop: asyncio.Event, on_reload: Callable[[], Awaitable[None]]) -> None:
        with contextlib.suppress(RedisError, OSError):
            self._applied = await self._generation()
        while not stop.is_set():
            try:
                await self._listen_once(stop, on_reload)
            except (RedisError, OSError) as exc:
                log.warning("plugin reload listener lost Redis, retrying: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    async def _listen_once(
        self, stop: asyncio.Event, on_reload: Callable[[], Awaitable[None]]
    ) -> None:
        pubsub: Any = self._redis.pubsub(ignore_subscribe_messages=True)
        if self._sharded:
            # SSUBSCRIBE picks the node by the channel's slot: the slot map must be loaded.
            await self._redis.initialize()
            await pubsub.ssubscribe(self._channel)
            receive = pubsub.get_sharded_message
        else:
            await pubsub.subscribe(self._channel)
            receive = pubsub.get_message
        try:
            # A reload announced while we were not subscribed is caught here.
            await self._catch_up(on_reload)
            loop = asyncio.get_running_loop()
            next_poll = loop.time() + self._poll
            while not stop.is_set():
                message = await receive(timeout=0.5)
                if message is not None and message.get("type") in (
                    b"message",
                    "message",
                    b"smessage",
                    "smessage",
                ):
                    data = message["data"]
                    text = data.decode() if isinstance(data, bytes) else str(data)
                    generation, _, origin = text.partition(":")
                    if origin != self._origin and int(generation) > (self._applied or 0):
                        self._applied = int(generation)
                        await on_reload()
                if loop.time() >= next_poll:
                    next_poll = loop.time() + self._poll
                    await self._catch_up(on_reload)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _catch_up(self, on_reload: Callable[[], Awaitable[None]]) -> None:
        current = await self._generation()
        if self._applied is None:
            self._applied = current
        elif current > self._applied:
            self._applied = current
            await on_reload()
