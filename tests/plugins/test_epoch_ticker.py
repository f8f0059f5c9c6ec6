"""The epoch ticker ticks only while a plugin call is in flight: a process that runs no plugin
(an API process serving reads) has no thread waking up to take the GIL from its event loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from arcana.adapters.plugins.host import TIMED_OUT, EpochTicker, PluginHost, PluginLimits
from arcana.adapters.plugins.sink import encode_event
from arcana.domain.audit import AuditEvent

TESTDATA = Path(__file__).resolve().parents[2] / "plugins" / "testdata"
EVENT = encode_event(AuditEvent("admin.config_change", "u1", "plugins", "reload"))


class CountingEngine:
    """Stands in for ``wasmtime.Engine``: counts the epoch increments."""

    def __init__(self) -> None:
        self.ticks = 0

    def increment_epoch(self) -> None:
        self.ticks += 1


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


def parked(ticker: EpochTicker) -> bool:
    """Waiting for a call without a timeout (read under the ticker's lock)."""
    with ticker._wake:
        return ticker.parked


@pytest.fixture
def started() -> Iterator[tuple[EpochTicker, CountingEngine]]:
    """A ticker (1 ms ticks) on a counting engine, started and parked."""
    engine = CountingEngine()
    engine_: Any = engine  # the ticker only calls ``increment_epoch``
    ticker = EpochTicker(engine_, 0.001)
    ticker.start()
    try:
        wait_for(lambda: parked(ticker))
        yield ticker, engine
    finally:
        ticker.stop()


def test_an_idle_ticker_parks_without_ticking(started: tuple[EpochTicker, CountingEngine]) -> None:
    _, engine = started
    assert engine.ticks == 0


def test_ticks_while_a_call_is_in_flight_then_parks_again(
    started: tuple[EpochTicker, CountingEngine],
) -> None:
    ticker, engine = started
    ticker.enter()
    ticker.enter()  # two calls: ticks until both have left
    wait_for(lambda: engine.ticks >= 2)
    ticker.leave()
    seen = engine.ticks
    wait_for(lambda: engine.ticks >= seen + 2)
    assert not parked(ticker)
    ticker.leave()
    wait_for(lambda: parked(ticker))
    after = engine.ticks
    # Parked means blocked on the condition with no timeout: only ``enter`` (or ``stop``)
    # wakes it, so the count cannot move until the next call.
    ticker.enter()
    wait_for(lambda: engine.ticks > after)
    ticker.leave()


def test_stop_wakes_a_parked_ticker(started: tuple[EpochTicker, CountingEngine]) -> None:
    ticker, _ = started
    thread = ticker._thread
    assert thread is not None
    ticker.stop()
    assert not thread.is_alive()
    assert not ticker.running


def test_a_parked_ticker_still_enforces_the_deadline(tmp_path: Path) -> None:
    """The ticker parked before the call; the call wakes it, so a plugin that never returns
    still times out, and the ticker parks again afterwards."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "looper.wat").write_bytes((TESTDATA / "looper.wat").read_bytes())
    host = PluginHost(plugins, PluginLimits(fuel=10**15, timeout_ms=20))
    host.start()
    try:
        host.load_all()
        wait_for(lambda: parked(host.ticker))
        done = threading.Event()
        results: list[list[tuple[str, int]]] = []

        def run() -> None:
            results.append(host.run(EVENT))
            done.set()

        threading.Thread(target=run, daemon=True).start()
        assert done.wait(30)
        assert results == [[("looper", TIMED_OUT)]]
        wait_for(lambda: parked(host.ticker))
    finally:
        host.close()
