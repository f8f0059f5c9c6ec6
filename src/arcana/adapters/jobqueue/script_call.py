"""One Lua script called with a pre-packed command over a connection of our own.

A single awaited enqueue is one ``EVALSHA`` round trip. Profiling it showed redis-py's own
per-command layers costing more than our code and the Redis reply together: every argument
encoded one by one, the pool's lock and hooks on checkout and release, the retry wrapper, the
duration recorder, and around each send and each read a timeout wrapper (``asyncio.wait_for``
makes a task per send) over an ``asyncio`` stream, so one command took about four turns of the
event loop. Callgrind put the client at about 300,000 instructions per enqueue, most of them
in those layers.

So the common case does not go through redis-py's connection at all: ``_Channel`` is a bare
``asyncio.Protocol`` on one TCP connection that this call opens itself. The fixed part of the
command (``EVALSHA <sha> <n> <key>...`` and any leading arguments every call passes) is packed
once, and a caller that knows the shape of its arguments may hand them over already packed
(``BULK_HEAD``, ``BULK_INT``); a call writes its bytes and waits on a future; replies are parsed
by hiredis (the C parser redis-py itself uses) and handed to the futures in order. Redis
answers the commands of one connection in the order they were sent, so concurrent callers
share the connection safely (pipelined), and a caller cancelled while waiting leaves its reply
to be read and dropped, so the connection stays in step.

Timeouts cost nothing per call: a watchdog timer, re-armed every ``socket_timeout`` while the
connection is open, aborts it when a reply was outstanding at the previous tick and none came
since (so a stalled call fails after one to two ``socket_timeout``).

Anything out of the ordinary goes through redis-py's ``Script`` call instead, which is the
same command with all its layers: a Redis Cluster client or a connection kind we do not open
ourselves (TLS, Unix socket, a credential provider), a recorded trace (so the client span is
still made), a script Redis no longer knows (``NOSCRIPT`` after a restart or ``SCRIPT FLUSH``:
``Script`` loads it), and a connection that dropped or timed out (``Script`` retries on a fresh
connection of the pool; the next call opens a new one of ours). A command whose connection
dropped may have run: every script of the queue is idempotent on the arguments it is given
(the job id is chosen before the call), so running it again is safe.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arcana import tracing
from arcana.adapters.redis_client import is_cluster

Arg = bytes | str | int

# Options of a redis-py connection pool that our own connection honours; any other option
# set to something other than its default sends the calls through redis-py.
_HONOURED = {
    "host",
    "port",
    "db",
    "username",
    "password",
    "socket_timeout",
    "socket_connect_timeout",
    "client_name",
    # redis-py's own machinery, which a plain connection of ours has no use for
    "retry",
    "retry_on_timeout",
    "retry_on_error",
    "health_check_interval",
    "encoding",
    "encoding_errors",
    "decode_responses",  # the queue reads text and bytes alike
    "protocol",
    "himport_registry",
    "maint_notifications_pool_handler",
    "maint_notifications_config",
    "orig_host_address",
    "orig_socket_timeout",
    "orig_socket_connect_timeout",
    "event_dispatcher",
    "lib_name",
    "lib_version",
    "parser_class",
    "credential_provider",  # honoured only when None, see ``_plain_tcp``
}


class _Made(dict[int, bytes]):
    """``make(n)`` for each ``n`` asked, made on first use and kept for 0 <= n <= 4096 (so the
    table stays small whatever it is asked). Packing a command is the largest part of a single
    enqueue's own work in the client; a look-up here costs a fraction of a ``bytes`` format."""

    def __init__(self, make: Callable[[int], bytes]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, n: int) -> bytes:
        made = self._make(n)
        if 0 <= n <= 4096:
            self[int(n)] = made
        return made


BULK_HEAD = _Made(lambda n: b"$%d\r\n" % n)
"""The header of a bulk string of ``n`` bytes: a bulk string is ``BULK_HEAD[len(raw)] + raw +
b"\\r\\n"``."""
BULK_INT = _Made(lambda n: b"$%d\r\n%d\r\n" % (len(b"%d" % n), n))
"""The integer ``n`` as a whole bulk string (Redis takes every argument as a string)."""
ARRAY_HEAD = _Made(lambda n: b"*%d\r\n" % n)


def _bulk(value: Arg) -> bytes:
    raw = value if isinstance(value, bytes) else str(value).encode()
    return b"".join((BULK_HEAD[len(raw)], raw, b"\r\n"))


def _command(*args: Arg) -> bytes:
    return ARRAY_HEAD[len(args)] + b"".join([_bulk(a) for a in args])


def _plain_tcp(redis: Redis) -> dict[str, Any] | None:
    """The pool's connection options when a plain TCP connection of ours can stand in for
    one of its connections; ``None`` otherwise."""
    pool = redis.connection_pool
    if pool.connection_class is not Connection:  # TLS, Unix socket, a subclass of someone's
        return None
    kwargs = dict(pool.connection_kwargs)
    if set(kwargs) - _HONOURED or kwargs.get("credential_provider") is not None:
        return None
    return kwargs


class _Channel(asyncio.Protocol):
    """One connection; commands pipelined, replies handed out in the order sent."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        self._loop = loop
        self._timeout = timeout
        self._parser = hiredis.Reader(replyError=ResponseError)
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._sent = self._received = 0
        self._checked: tuple[int, int] = (0, 0)
        self._timed_out = False
        self.open = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self._transport = cast(asyncio.Transport, transport)
        self.open = True
        if self._timeout:
            self._watchdog = self._loop.call_later(self._timeout, self._watch)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        parser.feed(data)
        try:
            reply = parser.gets()
            while reply is not False:
                self._received += 1
                future = self._waiting.popleft()
                if not future.done():  # done: its caller was cancelled
                    future.set_result(reply)
                reply = parser.gets()
        except (hiredis.ProtocolError, IndexError):  # garbage, or a reply nobody asked for
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self._watchdog is not None:
            self._watchdog.cancel()
        error: Exception
        if self._timed_out:
            error = RedisTimeoutError("Timeout reading from Redis")
        else:
            error = RedisConnectionError(f"Connection to Redis lost: {exc or 'closed'}")
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)

    # -- ours ------------------------------------------------------------------------------
    def send(self, packed: bytes) -> asyncio.Future[Any]:
        """Write one command; the future gets its reply (an error reply as a
        ``ResponseError`` value, not raised) or the connection's failure."""
        if not self.open:
            raise RedisConnectionError("Connection to Redis closed")
        assert self._transport is not None
        future = self._loop.create_future()
        self._waiting.append(future)
        self._sent += 1
        self._transport.write(packed)
        return future

    def _watch(self) -> None:
        now = (self._sent, self._received)
        previous, self._checked = self._checked, now
        if previous[0] > previous[1] and previous[1] == now[1]:  # waited a whole period
            self._timed_out = True
            self.abort()
            return
        assert self._timeout is not None
        self._watchdog = self._loop.call_later(self._timeout, self._watch)

    def abort(self) -> None:
        self.open = False
        if self._transport is not None:
            self._transport.abort()  # connection_lost follows, failing the waiting calls

    def close(self) -> None:
        self.open = False
        if self._transport is not None:
            self._transport.close()

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._transport


class ScriptCall:
    """Calls ``script`` with ``keys`` and ``args`` (leading arguments every call passes, then
    each call's own; see the module doc)."""

    def __init__(
        self, redis: Redis, script: AsyncScript, keys: Sequence[str], args: Sequence[Arg] = ()
    ) -> None:
        self._redis = redis
        self._script = script
        self._keys = list(keys)
        self._args = list(args)
        self._options = None if is_cluster(redis) else _plain_tcp(redis)
        head: list[Arg] = ["EVALSHA", script.sha, len(self._keys), *self._keys, *self._args]
        self._head_count = len(head)
        self._head = b"".join(_bulk(a) for a in head)
        self._channel: _Channel | None = None
        self._opening: asyncio.Lock | None = None

    async def __call__(self, args: Sequence[Arg], packed: bytes | None = None) -> Any:
        """The script's reply to this call's ``args``. ``packed`` is the same ``args`` already
        packed as the protocol's bulk strings (``BULK_HEAD``, ``BULK_INT``), from a caller that
        packs its known shape of arguments more cheaply than one conversion per argument."""
        if self._options is None or tracing.recording():
            return await self._through_redis_py(args)
        if packed is None:
            packed = b"".join([_bulk(a) for a in args])
        command = b"".join((ARRAY_HEAD[self._head_count + len(args)], self._head, packed))
        channel = self._channel
        try:
            if channel is None or not channel.open:
                channel = await self._open()
            reply = await channel.send(command)
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError):
            return await self._through_redis_py(args)
        if reply.__class__ is ResponseError:
            if str(reply).startswith("NOSCRIPT"):
                return await self._through_redis_py(args)
            raise reply
        return reply

    async def _through_redis_py(self, args: Sequence[Arg]) -> Any:
        return await self._script(keys=self._keys, args=[*self._args, *args])

    async def _open(self) -> _Channel:
        """Open our connection (once, whoever asks first): connect, ``AUTH``, ``SELECT``."""
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            channel = self._channel
            if channel is not None and channel.open:
                return channel
            options = self._options
            assert options is not None
            loop = asyncio.get_running_loop()
            channel = _Channel(loop, options.get("socket_timeout"))
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: channel, options.get("host", "localhost"), options.get("port", 6379)
                ),
                options.get("socket_connect_timeout") or options.get("socket_timeout"),
            )
            try:
                if not channel.open:
                    raise RedisConnectionError("Connection to Redis not made")
                handshake: list[tuple[Arg, ...]] = []
                if options.get("password") is not None:
                    user = options.get("username")
                    password = options["password"]
                    handshake.append(("AUTH", user, password) if user else ("AUTH", password))
                if int(options.get("db") or 0):
                    handshake.append(("SELECT", int(options["db"])))
                if options.get("client_name"):
                    handshake.append(("CLIENT", "SETNAME", options["client_name"]))
                for name, *rest in handshake:
                    reply = await channel.send(_command(name, *rest))
                    if isinstance(reply, ResponseError):
                        raise RedisConnectionError(f"Redis refused {name!s}: {reply}")
            except BaseException:
                channel.close()
                raise
            self._channel = channel
            return channel

    async def close(self) -> None:
        """Close our connection (calls still waiting on it fail as on a dropped one)."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
