"""One Lua script called with a pre-packed command on connections the caller keeps.

A single awaited enqueue is one ``EVALSHA`` round trip, and profiling it showed redis-py's own
per-command layers costing more than our code and the Redis reply together: every argument
(the nine fixed keys included) encoded one by one, the pool's lock and its observability
hooks on checkout and release, the retry wrapper and the duration recorder around the call.
Here the fixed part of the command (``EVALSHA <sha> <n> <keys…>``) is packed once, only the
call's own arguments are packed per call, and connections are taken from a small free list of
our own (filled from the client's pool, given back on ``close``).

Anything out of the ordinary goes through redis-py's ``Script`` call instead, which is the
same command with all its layers: a Redis Cluster client, a recorded trace (so the client span
is still made), a script Redis no longer knows (``NOSCRIPT`` after a restart: ``Script`` loads
it) and a broken connection (``Script`` retries on a fresh one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arcana import tracing
from arcana.adapters.redis_client import is_cluster

Arg = bytes | str | int


def _bulk(value: Arg) -> bytes:
    raw = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


class ScriptCall:
    """Calls ``script`` with ``keys`` (see the module doc)."""

    MAX_IDLE = 16

    def __init__(self, redis: Redis, script: AsyncScript, keys: Sequence[str]) -> None:
        self._redis = redis
        self._script = script
        self._keys = list(keys)
        self._fast = not is_cluster(redis)
        head: list[Arg] = ["EVALSHA", script.sha, len(self._keys), *self._keys]
        self._head_count = len(head)
        self._head = b"".join(_bulk(a) for a in head)
        self._idle: list[AbstractConnection] = []

    async def __call__(self, args: Sequence[Arg]) -> Any:
        if not self._fast or tracing.recording():
            return await self._script(keys=self._keys, args=list(args))
        packed = b"*%d\r\n%s%s" % (
            self._head_count + len(args),
            self._head,
            b"".join(_bulk(a) for a in args),
        )
        pool = self._redis.connection_pool
        conn = self._idle.pop() if self._idle else await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(packed)
            reply = await conn.read_response()
        except ResponseError as exc:  # a whole error reply was read: the connection is fine
            await self._keep(conn)
            if isinstance(exc, NoScriptError):
                return await self._script(keys=self._keys, args=list(args))
            raise
        except (RedisConnectionError, RedisTimeoutError, OSError):
            await conn.disconnect()
            await pool.release(conn)
            return await self._script(keys=self._keys, args=list(args))
        except BaseException:
            await conn.disconnect()  # cancelled mid-reply: the connection is out of step
            await pool.release(conn)
            raise
        await self._keep(conn)
        return reply

    async def _keep(self, conn: AbstractConnection) -> None:
        if len(self._idle) < self.MAX_IDLE:
            self._idle.append(conn)
        else:
            await self._redis.connection_pool.release(conn)

    async def close(self) -> None:
        """Give the kept connections back to the client's pool."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._redis.connection_pool.release(conn)
