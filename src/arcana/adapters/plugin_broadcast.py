"""Plugin-reload broadcast in embedded mode: one process, nothing to tell.
``redis_plugin_broadcast.py`` has the one that tells the other API processes (apart, so that a
process without Redis never imports redis-py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class NullPluginReloadBroadcast:
    """Embedded mode: one process, nothing to tell."""

    async def announce(self) -> None:
        return None

    async def listen(self, stop: asyncio.Event, on_reload: Callable[[], Awaitable[None]]) -> None:
        await stop.wait()
