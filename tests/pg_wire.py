"""A TCP proxy in front of PostgreSQL that counts round trips on the wire.

A client waits for the server at the end of every batch of messages it sends: after a simple
``Query`` (``BEGIN``, ``COMMIT``, ...), after a ``Sync`` (an extended-protocol ``Bind``/
``Execute`` batch, answered by ``ReadyForQuery``) and after a ``Flush`` (asyncpg prepares a
statement with ``Parse``/``Describe``/``Flush``, then reads the description before binding).
Counting those messages counts round trips, independently of the driver's internals and of
how loaded the machine is (the connection start-up is counted apart, as ``connections``). The
client's statements are recorded too (simple queries by text, extended ones by kind), so a
test can say which statements made up a round trip.

The client must not negotiate TLS (the proxy reads the stream): connect with ``?ssl=disable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field


@dataclass
class WireCounts:
    round_trips: int = 0
    """Batches the client waited on: ``Query``, ``Sync`` and ``Flush`` messages it sent."""
    queries: list[str] = field(default_factory=list)
    """Simple-protocol query texts (``BEGIN``, ``COMMIT``, ...), in order."""
    executes: int = 0
    """Extended-protocol ``Execute`` messages (one per prepared statement run)."""
    parses: int = 0
    """Extended-protocol ``Parse`` messages (statements prepared)."""
    connections: int = 0
    """Connections opened through the proxy."""


class _Stream:
    """Splits the client's side of the protocol into messages (type byte + int32 length)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._startup = True  # the client's first message has no type byte

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self._buf += data
        out: list[tuple[bytes, bytes]] = []
        while True:
            if self._startup:
                if len(self._buf) < 4:
                    return out
                (length,) = struct.unpack("!i", self._buf[:4])
                if len(self._buf) < length:
                    return out
                del self._buf[:length]
                self._startup = False
                continue
            if len(self._buf) < 5:
                return out
            kind = bytes(self._buf[:1])
            (length,) = struct.unpack("!i", self._buf[1:5])
            if len(self._buf) < 1 + length:
                return out
            out.append((kind, bytes(self._buf[5 : 1 + length])))
            del self._buf[: 1 + length]


class WireCounter:
    """``async with WireCounter(host, port) as proxy``: ``proxy.port`` forwards to the server;
    ``proxy.counts`` accumulates over every connection made through it (``reset()`` starts
    afresh)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.counts = WireCounts()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.held = False
        """While true, what the server sends (its end of the connection too) is kept back
        from the client until the client next sends something, which it then reads as the
        answer: as when a server's goodbye reaches an idle pooled connection only once that
        connection is used again (the client's event loop had not read it yet)."""
        self.kept_endings = 0
        """Connections the server ended while ``held``, whose ending the client has not read."""

    def reset(self) -> WireCounts:
        """The counts so far, and a fresh tally from now on."""
        counts, self.counts = self.counts, WireCounts()
        return counts

    async def __aenter__(self) -> WireCounter:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._closing = True
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward one client connection. Both of its sockets are closed however it ends
        (cancelled while connecting upstream, or accepted after ``__aexit__`` began): an
        unclosed ``StreamWriter`` warns when it is collected, in whatever test runs then."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            if self._closing:
                return
            self.counts.connections += 1
            up_reader, up_writer = await asyncio.open_connection(*self._target)
            await self._forward(reader, writer, up_reader, up_writer)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the server went away, or this counter is closing
        finally:
            writer.close()
            if up_writer is not None:
                up_writer.close()
            self._tasks.discard(task)

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        client = _Stream()

        def on_client(data: bytes) -> None:
            for kind, payload in client.feed(data):
                if kind in (b"Q", b"S", b"H"):
                    self.counts.round_trips += 1
                if kind == b"Q":
                    self.counts.queries.append(payload.rstrip(b"\0").decode())
                elif kind == b"E":
                    self.counts.executes += 1
                elif kind == b"P":
                    self.counts.parses += 1

        kept = bytearray()  # what the server sent while ``held``, not yet given to the client
        server_ended = False

        async def to_server() -> None:
            nonlocal server_ended
            try:
                while data := await reader.read(65536):
                    on_client(data)
                    if kept:  # the client speaks again: now it reads what was kept back
                        writer.write(bytes(kept))
                        kept.clear()
                        await writer.drain()
                        if server_ended:
                            writer.close()
                    with contextlib.suppress(ConnectionError):  # the server may be gone
                        up_writer.write(data)
                        await up_writer.drain()
            finally:
                up_writer.close()

        async def to_client() -> None:
            nonlocal server_ended
            try:
                while data := await up_reader.read(65536):
                    if self.held or kept:
                        kept.extend(data)
                        continue
                    writer.write(data)
                    await writer.drain()
                server_ended = True
                if kept:
                    self.kept_endings += 1
            finally:
                if not kept:
                    writer.close()

        await asyncio.gather(to_server(), to_client())
