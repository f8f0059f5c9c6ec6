"""The wire counter of the round-trip tests closes every socket it opened, however it ends.

An unclosed ``StreamWriter`` warns when the garbage collector reaches it, and pytest turns
that into a failure of whatever test is running then, far from the cause."""

from __future__ import annotations

import asyncio
import gc
import warnings

from tests.pg_wire import WireCounter


async def test_a_counter_closing_while_connections_arrive_leaves_no_socket_open() -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients: list[asyncio.StreamWriter] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        try:
            for turns in range(24):
                async with WireCounter("127.0.0.1", port) as proxy:
                    _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                    clients.append(writer)
                    for _ in range(turns % 4):  # the counter ends at each stage of a connection
                        await asyncio.sleep(0)
        finally:
            for writer in clients:
                writer.close()
            server.close()
            await server.wait_closed()
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []
