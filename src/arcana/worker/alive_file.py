"""A file whose age says the worker's event loop still turns (``ARCANA_WORKER_ALIVE_FILE``).

``arcana worker`` has no HTTP port of its own to probe, and its ``/metrics`` endpoint is served
by a thread of prometheus_client that answers even when the event loop is stuck. So the loop
touches a file every few seconds, and a liveness probe that checks the file's age restarts a
worker whose loop stopped turning (``deploy/k8s/worker.yaml``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

log = logging.getLogger("arcana.worker")

TOUCH_EVERY = 5.0
"""Seconds between touches: well under the probe's limit (60 s), a few file writes a minute."""


def touch(path: Path) -> None:
    """Create or touch ``path``; an ``OSError`` says why it cannot be written."""
    path.touch()


async def keep_alive(path: Path, done: asyncio.Event, every: float = TOUCH_EVERY) -> None:
    """Touch ``path`` every ``every`` seconds until ``done`` is set, then remove it.

    The touch runs on a thread (no file I/O on the loop), but it is scheduled by the loop, so
    it stops when the loop does. A failed touch is logged and tried again next time: the probe,
    not this loop, decides when a worker is dead."""
    try:
        while not done.is_set():
            try:
                await asyncio.to_thread(touch, path)
            except OSError as exc:
                log.warning("could not touch the alive file %s: %s", path, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), every)
    finally:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
