"""A PostgreSQL connection pool that hands connections to waiting tasks in arrival order.

SQLAlchemy's async ``QueuePool`` keeps idle connections in an ``asyncio.Queue``. Under more
concurrent requests than connections, two things go wrong there, both measured on
``GET /auth/me`` at 64 concurrent requests over the default 10 + 10 connections
(``bench/auth_me.py``):

- **Starvation.** A returned connection is put in the queue and the first waiter is woken,
  but any task that asks before the woken one runs takes the connection without waiting; the
  woken task finds the queue empty and waits again *at the back of the line* (that is how
  ``asyncio.Queue.get`` loops). An unlucky request can lose that race again and again until
  the pool timeout: the seconds-long tail (wrk's 2 s timeouts) of an otherwise 1-round-trip
  route.
- **Churn.** While woken waiters have not run yet, the queue can look full (``pool_size``
  idle connections in it), and an overflow connection checked in at that moment is closed,
  to be opened again by the next request: 0.16 new connections (connect, authentication,
  and a new prepare of every statement on the new connection) per request in that run.

Here a connection checked in while tasks wait goes straight to the oldest of them, and a
task that arrives finds an idle connection only when nobody is waiting. Nothing else of the
pool changes (sizes, overflow, timeout, invalidation, recycle). Hand-written because
SQLAlchemy has no fair queue for its async pools; it does take a queue class per pool class.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import await_
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty, Full


class FairAsyncQueue(AsyncAdaptedQueue[Any]):
    """First come, first served: an item put while getters wait goes to the oldest getter."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._items: collections.deque[Any] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()

    @property
    def waiting(self) -> int:
        """Tasks waiting for an item (the ``arcana_db_pool_waiting`` gauge)."""
        return sum(1 for w in self._waiters if not w.done())

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._items)

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: Any) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a waiter that timed out or was cancelled is skipped
                waiter.set_result(item)
                return
        if self.full():
            raise Full()
        self._items.append(item)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        # The pool only ever puts without blocking; a put never needs to wait here.
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items:
            raise Empty()
        return self._items.pop() if self.use_lifo else self._items.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if self._items or not block:
            return self.get_nowait()
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await_(asyncio.wait_for(waiter, timeout))
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # Handed over just as this task gave up (timeout or cancellation): pass the
                # connection on instead of losing it.
                self.put_nowait(waiter.result())
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, asyncio.TimeoutError):
                raise Empty() from None
            raise

    def __repr__(self) -> str:
        return f"<FairAsyncQueue idle={len(self._items)} waiting={self.waiting}>"


class FairAsyncQueuePool(AsyncAdaptedQueuePool):
    """``AsyncAdaptedQueuePool`` over ``FairAsyncQueue`` (see the module doc)."""

    _queue_class = FairAsyncQueue
