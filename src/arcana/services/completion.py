"""Writes that must not stop halfway between their commit and the cache update after it."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from arcana.errors import ArcanaError

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")
_WRITES: set[asyncio.Task[Any]] = set()
"""Writes whose caller went away: held here until they finish (the loop keeps only weak
references to tasks)."""


def _abandoned_write_done(task: asyncio.Task[Any]) -> None:
    _WRITES.discard(task)
    exc = None if task.cancelled() else task.exception()
    if exc is not None and not isinstance(exc, ArcanaError):  # a refusal is no news
        log.error("a write whose caller was cancelled failed", exc_info=exc)


async def finish_abandoned_writes(timeout: float) -> None:
    """At shutdown, after the servers have stopped and before the database and cache close:
    writes whose caller went away get up to ``timeout`` seconds to reach their commit and the
    cache update after it. Closed under them, such a write would fail halfway, the very thing
    ``runs_to_completion`` is there to prevent. One still running after ``timeout`` is
    cancelled (its transaction rolls back) rather than left to run on closed pools."""
    if not _WRITES:
        return
    log.warning(
        "waiting up to %.1f s for %d write(s) whose caller went away", timeout, len(_WRITES)
    )
    _done, pending = await asyncio.wait(set(_WRITES), timeout=timeout)
    if pending:
        log.error(
            "%d write(s) whose caller went away were still running at shutdown: cancelled",
            len(pending),
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def runs_to_completion(
    write: Callable[_P, Coroutine[Any, Any, _R]],
) -> Callable[_P, Awaitable[_R]]:
    """A write goes on to its commit *and* the cache update that follows it even when the
    caller is cancelled (a client hanging up mid-request). Cancelled between the two, a cache
    would answer from before the write until its TTL: the old product, or, for a revoked
    session, an access token that should no longer pass. The caller still sees its
    cancellation."""

    @functools.wraps(write)
    async def whole(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        task = asyncio.ensure_future(write(*args, **kwargs))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                _WRITES.add(task)
                task.add_done_callback(_abandoned_write_done)
            raise

    return whole
