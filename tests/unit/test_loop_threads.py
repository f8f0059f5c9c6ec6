"""``LoopThreads``: calls run on the named threads and come back with their result or error; a
call whose caller gave up before a thread took it is not run; shutting down with
``cancel_pending`` cancels what no thread took yet."""

from __future__ import annotations

import asyncio
import threading

import pytest

from arcana.adapters.loop_threads import LoopThreads


async def test_calls_come_back_with_their_result_or_their_error() -> None:
    threads = LoopThreads(2, "test-threads")
    try:
        names = await asyncio.gather(
            *(threads.run(lambda: threading.current_thread().name) for _ in range(8))
        )
        assert set(names) <= {"test-threads_0", "test-threads_1"}
        assert await threads.run(divmod, 7, 2) == (3, 1)

        def fails() -> None:
            raise LookupError("from the thread")

        with pytest.raises(LookupError, match="from the thread"):
            await threads.run(fails)
        assert await threads.run(int, "5") == 5  # the thread goes on
    finally:
        threads.shutdown()


async def test_a_call_given_up_before_it_started_is_not_run() -> None:
    threads = LoopThreads(1, "test-threads")
    started, gate = threading.Event(), threading.Event()
    ran: list[str] = []
    try:
        busy = asyncio.create_task(threads.run(lambda: (started.set(), gate.wait(5))))
        assert await asyncio.to_thread(started.wait, 5)
        queued = asyncio.create_task(threads.run(ran.append, "queued"))
        while not threads.queued():  # the call is on the queue, behind the busy one
            await asyncio.sleep(0)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        gate.set()
        await busy
        assert await threads.run(ran.append, "after") is None
        assert ran == ["after"]
    finally:
        gate.set()
        threads.shutdown()


async def test_shutdown_cancels_the_calls_no_thread_took() -> None:
    threads = LoopThreads(1, "test-threads")
    started, gate = threading.Event(), threading.Event()
    busy = asyncio.create_task(threads.run(lambda: (started.set(), gate.wait(5))[1]))
    assert await asyncio.to_thread(started.wait, 5)
    queued = asyncio.create_task(threads.run(int, "1"))
    while not threads.queued():
        await asyncio.sleep(0)
    threads.shutdown(wait=False, cancel_pending=True)
    with pytest.raises(asyncio.CancelledError):
        await queued
    gate.set()
    assert await busy is True  # the running call ends and answers
    with pytest.raises(RuntimeError):
        await threads.run(int, "2")
