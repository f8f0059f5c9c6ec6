"""The runtime that supervises a process's background loops."""

from __future__ import annotations

import asyncio

from arcana.runtime import Runtime
from tests.conftest import wait_for


async def test_a_crashed_loop_is_restarted_and_stop_waits_for_it() -> None:
    runtime = Runtime(shutdown_timeout=5)
    runs: list[int] = []
    stopped = asyncio.Event()

    async def loop(stop: asyncio.Event) -> None:
        runs.append(len(runs) + 1)
        if len(runs) == 1:
            raise RuntimeError("first run fails")
        await stop.wait()
        stopped.set()

    assert runtime.spawn("flaky", loop)
    await wait_for(lambda: len(runs) == 2)
    await runtime.stop()
    assert stopped.is_set()
    assert runtime.names == []


async def test_a_name_runs_once() -> None:
    runtime = Runtime(shutdown_timeout=5)
    started = 0

    async def loop(stop: asyncio.Event) -> None:
        nonlocal started
        started += 1
        await stop.wait()

    assert runtime.spawn("relay", loop)
    assert not runtime.spawn("relay", loop)
    await wait_for(lambda: started == 1)
    assert runtime.running("relay")
    assert runtime.names == ["relay"]
    await runtime.stop()
    assert started == 1


async def test_a_loop_that_ignores_stop_is_cancelled_after_the_timeout() -> None:
    runtime = Runtime(shutdown_timeout=5)
    cancelled = asyncio.Event()
    entered = asyncio.Event()

    async def stubborn(stop: asyncio.Event) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    runtime.spawn("stubborn", stubborn)
    await entered.wait()
    await runtime.stop(timeout=0)
    assert cancelled.is_set()


def test_start_up_objects_are_frozen_out_of_the_collector() -> None:
    """What exists when a process starts serving is no longer walked by full collections;
    what comes later is collected as usual."""
    import gc

    from arcana.lifecycle import Lifecycle

    started: list[int] = [1]  # a container: tracked by the collector until frozen
    gc.unfreeze()
    try:
        Lifecycle.freeze_start_up_objects()
        assert gc.get_freeze_count() > 0
        assert not any(o is started for o in gc.get_objects())
        later = [started]  # a container made after the freeze: still tracked
        assert any(o is later for o in gc.get_objects())
    finally:
        gc.unfreeze()
