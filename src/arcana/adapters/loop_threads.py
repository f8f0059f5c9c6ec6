"""Threads of our own that run blocking calls for the event loop: one hand-over each way.

Why not ``loop.run_in_executor`` over a ``ThreadPoolExecutor``: each call there builds a
``concurrent.futures.Future`` (with its ``Condition`` and lock), a work item, and an asyncio
future chained to it by callbacks both ways, whose state is copied across when the call ends:
about 25 µs of CPU per call on this machine, against about 10 µs here (uvloop, a call that
returns at once; most of what is left is the two wake-ups). A login hands work to a thread
three times on SQLite (the user read, the Argon2 verification, the session write), on the
cores its Argon2 hashes need.

Here a call puts (function, arguments, asyncio future) on a queue; a thread takes it, runs
it, and sets the future's result or exception through ``call_soon_threadsafe``. As with a
thread pool, a call whose caller gave up (its future cancelled) before a thread took it is not
run, and one already running runs to its end (its result is dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")

_Call = tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any], asyncio.AbstractEventLoop]


class LoopThreads:
    """``threads`` threads named ``{name}_{i}``, started by the first call (see the module
    doc). Calls run in the order they were made."""

    def __init__(self, threads: int, name: str) -> None:
        self._size = max(1, threads)
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on one of the threads; its result once it returned."""
        if self._closed:
            raise RuntimeError(f"{self._name} threads are shut down")
        if not self._threads:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._calls.put((fn, args, future, loop))
        return cast(T, await future)

    def queued(self) -> int:
        """Calls waiting for a thread (not counting those running)."""
        return self._calls.qsize()

    def _start(self) -> None:
        for i in range(self._size):
            thread = threading.Thread(target=self._work, name=f"{self._name}_{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                return
            fn, args, future, loop = call
            del call
            if future.cancelled():  # the caller gave up before it started
                continue
            try:
                result = fn(*args)
            except BaseException as exc:
                _hand_back(loop, _set_exception, future, exc)
            else:
                _hand_back(loop, _set_result, future, result)
            del fn, args, future, loop

    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False) -> None:
        """No new calls; with ``cancel_pending`` the calls no thread took yet are cancelled
        (their callers get ``CancelledError``); with ``wait``, returns once the threads
        finished what they took."""
        self._closed = True
        if cancel_pending:
            while True:
                try:
                    call = self._calls.get_nowait()
                except queue.Empty:
                    break
                if call is not None:
                    _hand_back(call[3], _cancel, call[2], None)
        for _ in self._threads:
            self._calls.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


def _hand_back(
    loop: asyncio.AbstractEventLoop,
    settle: Callable[[asyncio.Future[Any], Any], None],
    future: asyncio.Future[Any],
    value: Any,
) -> None:
    # A closed loop (RuntimeError): nobody waits for the answer any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle, future, value)


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _cancel(future: asyncio.Future[Any], _: Any) -> None:
    future.cancel()
