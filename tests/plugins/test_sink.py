"""The audit sink: emit never blocks, a full queue drops and counts; idle workers wait without
polling."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from arcana.adapters.plugins.host import PluginHost
from arcana.adapters.plugins.sink import HostRegistry, PluginAuditSink, _Stop
from arcana.domain.audit import AuditEvent
from arcana.domain.plugins import AuditEntry
from arcana.metrics import AUDIT_DROPPED, AUDIT_EVENTS


class InMemoryAuditLog:
    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    async def add(self, entry: AuditEntry) -> None:
        self.entries.append(entry)

    async def list(
        self, *, flagged: bool | None, page: int, size: int
    ) -> tuple[list[AuditEntry], int]:
        return self.entries[page * size : (page + 1) * size], len(self.entries)


def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    sink = PluginAuditSink(
        HostRegistry(PluginHost(tmp_path)), InMemoryAuditLog(), queue_size=2, workers=1
    )
    before = AUDIT_DROPPED._value.get()
    for _ in range(5):
        sink.emit(AuditEvent("user.login", "u", "auth", "login"))
    assert sink.dropped == 3
    assert AUDIT_DROPPED._value.get() - before == 3


class RecordingQueue(queue.Queue[Any]):
    """Records the ``timeout`` of every ``get``."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.timeouts: list[float | None] = []

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        self.timeouts.append(timeout if block else 0.0)
        return super().get(block, timeout)


def _workers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("audit-plugins-")}


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_idle_workers_wait_without_polling_and_stop_on_a_token(tmp_path: Path) -> None:
    """A worker waits on the queue with no timeout (polling woke each worker 5 times a second
    and took the GIL from the event loop); ending ``run`` wakes and ends every worker, also
    with a queue smaller than the number of workers; a token left by an earlier run is
    skipped, not taken for this run's end."""
    sink = PluginAuditSink(
        HostRegistry(PluginHost(tmp_path)), InMemoryAuditLog(), queue_size=1, workers=2
    )
    recording = RecordingQueue(1)
    recording.put_nowait(_Stop())  # stale, from an earlier run
    sink._queue = recording
    before = _workers()
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    await _until(lambda: len(_workers() - before) == 2)
    ours = _workers() - before
    await _until(recording.empty)  # the stale token taken (and skipped)
    sink.emit(AuditEvent("user.login", "u", "auth", "login"))
    await _until(lambda: sink.processed == 1)
    assert all(t.is_alive() for t in ours)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert not any(t.is_alive() for t in ours)
    assert recording.timeouts
    assert set(recording.timeouts) == {None}


async def test_with_no_plugin_active_an_event_is_counted_clean_at_once(tmp_path: Path) -> None:
    """Once the plugins are loaded and none is active, ``emit`` counts the event clean itself:
    nothing is queued for a worker (whose wake-up would take the GIL from the event loop).
    An event emitted before the plugins are loaded is queued, and judged once they are."""
    sink = PluginAuditSink(HostRegistry(PluginHost(tmp_path)), InMemoryAuditLog(), workers=1)
    clean = AUDIT_EVENTS.labels("clean")
    before = clean._value.get()
    sink.emit(AuditEvent("user.login", "u", "auth", "login"))
    assert (sink._queue.qsize(), sink.processed) == (1, 0)
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    try:
        await _until(lambda: sink.processed == 1)  # judged (by no plugin) by the worker
        await _until(lambda: sink._serving)
        for _ in range(3):
            sink.emit(AuditEvent("user.data_access", "u", "user", "read"))
        assert (sink._queue.qsize(), sink.processed) == (0, 4)
        assert clean._value.get() - before == 4
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def test_a_registry_is_given_a_host_or_how_to_make_one_and_made_lazily(tmp_path: Path) -> None:
    """Neither, or both, is refused when the registry is built, not at its first use."""
    for wrong in ({}, {"host": PluginHost(tmp_path), "make_host": lambda: PluginHost(tmp_path)}):
        with pytest.raises(TypeError, match="host or make_host"):
            HostRegistry(**wrong)  # type: ignore[arg-type]
    made: list[PluginHost] = []

    def make() -> PluginHost:
        made.append(PluginHost(tmp_path))
        return made[-1]

    registry = HostRegistry.lazy(make)
    assert made == []
    assert registry.host is made[0]
    assert registry.host is made[0]  # made once
