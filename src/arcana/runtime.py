"""Supervision of a process's background loops: start each once, restart one that crashes
(with backoff), stop them all within a deadline.

It knows nothing of what the loops do; ``arcana.lifecycle`` decides which ones a process runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

BackgroundTask = Callable[[asyncio.Event], Awaitable[None]]
"""A long-running loop that returns soon after the stop event is set."""

FIRST_RESTART_DELAY = 0.1
MAX_RESTART_DELAY = 5.0


class Runtime:
    """The background loops of one process, each under a unique name."""

    def __init__(self, shutdown_timeout: float) -> None:
        self.shutdown_timeout = shutdown_timeout
        self._stop = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def names(self) -> list[str]:
        return list(self._tasks)

    def running(self, name: str) -> bool:
        return name in self._tasks

    def spawn(self, name: str, task: BackgroundTask) -> bool:
        """Run ``task`` until ``stop()``; a crash is logged and the loop restarted after a
        growing delay. A name already running is not started twice (returns False)."""
        if name in self._tasks:
            return False
        self._tasks[name] = asyncio.create_task(self._supervise(name, task), name=name)
        return True

    async def _supervise(self, name: str, task: BackgroundTask) -> None:
        delay = FIRST_RESTART_DELAY
        while not self._stop.is_set():
            try:
                await task(self._stop)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task %s crashed; restarting in %.1fs", name, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, MAX_RESTART_DELAY)

    async def stop(self, timeout: float | None = None) -> None:
        """Set the stop event, wait up to ``timeout`` (default: the shutdown timeout) for
        every loop to return, then cancel the rest."""
        self._stop.set()
        if not self._tasks:
            return
        wait = self.shutdown_timeout if timeout is None else timeout
        _done, pending = await asyncio.wait(self._tasks.values(), timeout=wait)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()
