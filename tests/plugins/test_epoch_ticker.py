"""The epoch ticker ticks only while a plugin call is in flight: a process that runs no plugin
(an API process serving reads) has no thread waking up to take the GIL from its event loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def make_ticker(engine: CountingEngine) -> EpochTicker:
    engine_: Any = engine  # the ticker only calls ``increment_epoch``
    return EpochTicker(engine_, 0.001)


def test_an_idle_ticker_parks_without_ticking() -> None:
    engine = CountingEngine()
    ticker = make_ticker(engine)
    ticker.start()
    try:
        wait_for(lambda: parked(ticker))
        assert engine.ticks == 0
    finally:
        ticker.stop()
    assert not ticker.running


def test_ticks_while_a_call_is_in_flight_then_parks_again() -> None:
    engine = CountingEngine()
    ticker = make_ticker(engine)
    ticker.start()
    try:
        wait_for(lambda: parked(ticker))
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
    finally:
        ticker.stop()


def test_stop_wakes_a_parked_ticker() -> None:
    ticker = make_ticker(CountingEngine())
    ticker.start()
    wait_for(lambda: parked(ticker))
    thread = ticker._thread
    assert thread is not None
    ticker.stop()
    assert not thread.is_alive()


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
