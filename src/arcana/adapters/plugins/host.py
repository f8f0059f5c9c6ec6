"""The WebAssembly plugin host (contract §6).

One ``Engine`` per process with fuel and epoch interruption on; modules are compiled once and
shared. Each worker thread keeps its own ``Store`` + ``Instance`` per plugin (a ``Store`` is
never touched by two threads) and reuses it for every event; after a trap the instance is
thrown away and built again on the next call. A ticker thread advances the engine epoch so a
call past its wall-clock deadline traps.

A plugin that exports ``alloc`` but not ``dealloc`` never gets its buffers back; its instance
is replaced by a fresh one after the call that brings its memory near the cap (counted as
``recycled``), so it keeps working indefinitely. What a plugin writes to stdout/stderr is
logged under its name after each call (see ``wasi.py``).

Result codes: what the plugin returns (``0`` ok, ``1`` flag, negative = its own error), or one
of the host's negative codes below when the call did not complete.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wasmtime

from arcana import tracing
from arcana.adapters.plugins.calls import (
    FastCall,
    MemoryWriter,
    SlowCall,
    make_arm,
    make_call,
)
from arcana.adapters.plugins.loader import (
    MAX_MEMORIES,
    MAX_TABLES,
    ModuleCompiler,
    PluginLoadError,
    PluginModule,
    ResourceCaps,
    plugin_files,
)
from arcana.adapters.plugins.wasi import (
    OUTPUT_LIMIT,
    Clock,
    PluginOutput,
    define_host_wasi,
    real_clock,
    set_deadline,
    set_output,
    wasi_config,
)
from arcana.metrics import (
    PLUGIN_CALL_DURATION,
    PLUGIN_CALLS,
    PLUGIN_DISABLED,
    PLUGIN_OUTPUT_DROPPED,
    PLUGIN_RECYCLED,
    PLUGINS_LOADED,
)

log = logging.getLogger(__name__)
output_log = logging.getLogger("arcana.plugins.output")

TRAPPED = -1000
"""The plugin trapped (unreachable, out-of-bounds access, stack overflow, …)."""
OUT_OF_FUEL = -1001
"""The call used up its fuel budget."""
TIMED_OUT = -1002
"""The call ran past its wall-clock deadline."""
BAD_BUFFER = -1003
"""``alloc`` returned a pointer outside memory, or memory could not grow (memory cap)."""

PAGE = 65536
LEGACY_MIN_BYTES = PAGE
STATS_WINDOW = 2048


@dataclass(frozen=True, slots=True)
class PluginLimits:
    fuel: int = 10_000_000
    timeout_ms: int = 50
    memory_bytes: int = 16 * 1024 * 1024
    max_failures: int = 5
    """Consecutive failed calls after which the circuit breaker disables the plugin."""
    table_elements: int = 65_536
    """Elements across an instance's tables (toolchains emit one function table of a few
    hundred)."""


@dataclass(slots=True)
class PluginStatus:
    """What ``GET /admin/plugins`` shows for one plugin."""

    name: str
    file: str
    digest: str | None
    version: int | None
    state: str
    calls: int
    flags: int
    errors: int
    p50_us: float | None
    p99_us: float | None
    error: str | None = None
    recycled: int = 0
    output_dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": self.file,
            "digest": self.digest,
            "version": self.version,
            "state": self.state,
            "calls": self.calls,
            "flags": self.flags,
            "errors": self.errors,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "error": self.error,
            "recycled": self.recycled,
            "output_dropped": self.output_dropped,
        }


@dataclass(slots=True)
class Plugin:
    """A loaded (or failed) plugin with its counters; shared by every worker thread."""

    name: str
    path: Path
    module: PluginModule | None
    version: int | None = None
    state: str = "active"
    error: str | None = None
    calls: int = 0
    flags: int = 0
    errors: int = 0
    consecutive_failures: int = 0
    recycled: int = 0
    """Instances replaced because their memory neared the cap (plugins without dealloc)."""
    output_dropped: int = 0
    """Bytes of stdout/stderr past the per-call bound."""
    durations_us: deque[float] = field(default_factory=lambda: deque(maxlen=STATS_WINDOW))
    lock: threading.Lock = field(default_factory=threading.Lock)
    _metrics: dict[str, Any] = field(default_factory=dict)

    def metric(self, outcome: str) -> Any:
        # Label look-ups cost more than the wasm call itself; keep the children.
        child = self._metrics.get(outcome)
        if child is None:
            child = self._metrics[outcome] = PLUGIN_CALLS.labels(self.name, outcome)
        return child

    def duration_metric(self) -> Any:
        child = self._metrics.get("_duration")
        if child is None:
            child = self._metrics["_duration"] = PLUGIN_CALL_DURATION.labels(self.name)
        return child

    def record(self, code: int, micros: float, max_failures: int) -> bool:
        """Count one call; return True if this call tripped the circuit breaker."""
        with self.lock:
            self.calls += 1
            self.durations_us.append(micros)
            if code == 1:
                self.flags += 1
            if code < 0:
                self.errors += 1
                self.consecutive_failures += 1
                if self.state == "active" and self.consecutive_failures >= max_failures:
                    self.state = "disabled"
                    self.error = f"disabled after {self.consecutive_failures} consecutive failures"
                    return True
            else:
                self.consecutive_failures = 0
        return False

    def status(self) -> PluginStatus:
        with self.lock:
            samples = sorted(self.durations_us)
            p50 = p99 = None
            if samples:
                p50 = round(statistics.median(samples), 1)
                p99 = round(samples[min(len(samples) - 1, math.ceil(0.99 * len(samples)) - 1)], 1)
            return PluginStatus(
                name=self.name,
                file=self.path.name,
                digest=self.module.digest if self.module else None,
                version=self.version,
                state=self.state,
                calls=self.calls,
                flags=self.flags,
                errors=self.errors,
                p50_us=p50,
                p99_us=p99,
                error=self.error,
                recycled=self.recycled,
                output_dropped=self.output_dropped,
            )


class PluginInstance:
    """One plugin's ``Store`` + ``Instance`` for one thread, reused across calls."""

    def __init__(
        self,
        host: PluginHost,
        module: PluginModule,
    ) -> None:
        self.host = host
        limits = host.limits
        self.store = wasmtime.Store(host.engine)
        # Every memory and table the instance could create is capped, and counted: one
        # instance, one memory, a few tables (the loader refuses modules that declare more).
        self.store.set_limits(
            memory_size=limits.memory_bytes,
            table_elements=limits.table_elements,
            instances=1,
            tables=MAX_TABLES,
            memories=MAX_MEMORIES,
        )
        self.output = PluginOutput()
        if module.uses_wasi:
            # Nothing granted: no preopened directories, environment, arguments or sockets;
            # stdout/stderr (the host's fd_write) go to self.output, logged after each call.
            self.store.set_wasi(wasi_config())
        self.sleeps = "poll_oneoff" in module.wasi_imports
        self.writes = "fd_write" in module.wasi_imports
        self._arm = make_arm(self.store, limits.fuel, host.deadline_ticks, fast=host.fast_calls)
        self.arm()
        instance = module.pre.instantiate(self.store)
        exports = instance.exports(self.store)
        self.exports = exports
        memory = exports["memory"]
        assert isinstance(memory, wasmtime.Memory)
        self.memory = memory
        fast = host.fast_calls
        self.writer = MemoryWriter(self.store, memory, fast=fast)
        on_event = exports["on_audit_event"]
        assert isinstance(on_event, wasmtime.Func)
        self.on_event: SlowCall | FastCall = make_call(self.store, on_event, 2, 1, fast=fast)
        self.alloc: SlowCall | FastCall | None = None
        self.dealloc: SlowCall | FastCall | None = None
        if module.has_alloc:
            alloc = exports["alloc"]
            assert isinstance(alloc, wasmtime.Func)
            self.alloc = make_call(self.store, alloc, 1, 1, fast=fast)
            if module.has_dealloc:
                dealloc = exports["dealloc"]
                assert isinstance(dealloc, wasmtime.Func)
                self.dealloc = make_call(self.store, dealloc, 2, 0, fast=fast)
        self.version_func: SlowCall | FastCall | None = None
        if module.has_version:
            version = exports["get_plugin_version"]
            assert isinstance(version, wasmtime.Func)
            self.version_func = make_call(self.store, version, 0, 1, fast=fast)
        # Legacy plugins (no alloc): a region of pages grown by the host at the end of memory,
        # so the event never lands on the plugin's own data (the reference wrote at offset 0).
        self.legacy_base = 0
        self.legacy_cap = 0
        # Plugins without dealloc: bytes handed out by alloc and never given back. The instance
        # is worn out (replaced after the call) once they, or its memory, come within a quarter
        # of the cap: the next events still fit, and the replacement starts empty.
        self.leaked = 0
        headroom = max(limits.memory_bytes // 4, PAGE)
        self.leak_budget = limits.memory_bytes - headroom
        self.recycle_at = max(limits.memory_bytes - headroom, self.writer.size() + headroom)
        self.worn_out = False
        if module.has_initialize:  # a WASI reactor: its constructors run once, before any call
            init = exports["_initialize"]
            assert isinstance(init, wasmtime.Func)
            self.arm()
            init(self.store)

    def _legacy_buffer(self, size: int) -> int:
        if size <= self.legacy_cap:
            return self.legacy_base
        pages = max(1, -(-max(size, LEGACY_MIN_BYTES) // PAGE))
        try:
            old_pages = self.memory.grow(self.store, pages)
        except wasmtime.WasmtimeError:
            return 0
        self.legacy_base = old_pages * PAGE
        self.legacy_cap = pages * PAGE
        return self.legacy_base

    def _write(self, ptr: int, payload: bytes) -> bool:
        return self.writer.write(ptr, payload)

    def arm(self) -> None:
        self._arm()  # fuel and the epoch deadline
        if self.sleeps:
            set_deadline(time.monotonic() + self.host.limits.timeout_ms / 1000)
        if self.writes:
            set_output(self.output)

    def call(self, payload: bytes) -> int:
        """One event; raises ``wasmtime.Trap``/``WasmtimeError`` if the call did not complete."""
        self.arm()
        size = len(payload)
        if self.alloc is not None:
            ptr = int(self.alloc(size))
            if not self._write(ptr, payload):
                if ptr > 0 and self.dealloc is not None:
                    self.dealloc(ptr, size)
                self.worn_out = self.dealloc is None
                return BAD_BUFFER
            if self.dealloc is None:
                return self._call_leaky(ptr, size)
            try:
                return int(self.on_event(ptr, size))
            finally:
                self.dealloc(ptr, size)
        ptr = self._legacy_buffer(size)
        if not self._write(ptr, payload):
            return BAD_BUFFER
        return int(self.on_event(ptr, size))

    def _call_leaky(self, ptr: int, size: int) -> int:
        code = int(self.on_event(ptr, size))
        self.leaked += size
        if self.leaked >= self.leak_budget or self.writer.size() >= self.recycle_at:
            self.worn_out = True
        return code

    def version(self) -> int | None:
        if self.version_func is None:
            return None
        self.arm()
        return int(self.version_func())


def classify(exc: BaseException) -> int:
    if isinstance(exc, wasmtime.Trap):
        code = exc.trap_code
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return OUT_OF_FUEL
        if code == wasmtime.TrapCode.INTERRUPT:
            return TIMED_OUT
    return TRAPPED


class PluginSet:
    """An immutable set of plugins. A reload builds a new set and swaps it in whole; calls
    already running finish on the set they started with. Instances live in a thread-local
    that belongs to the set, so they go when the set goes."""

    def __init__(self, plugins: list[Plugin]) -> None:
        self.plugins = plugins
        self._local = threading.local()

    def _instances(self) -> dict[str, PluginInstance]:
        try:
            instances: dict[str, PluginInstance] = self._local.instances
        except AttributeError:
            instances = {}
            self._local.instances = instances
        return instances

    def instance(self, host: PluginHost, plugin: Plugin) -> PluginInstance:
        instances = self._instances()
        inst = instances.get(plugin.name)
        if inst is None:
            assert plugin.module is not None
            inst = PluginInstance(host, plugin.module)
            instances[plugin.name] = inst
        return inst

    def discard(self, plugin: Plugin) -> None:
        self._instances().pop(plugin.name, None)

    def renew(self, host: PluginHost, plugin: Plugin) -> None:
        """Replace this thread's instance of ``plugin`` with a fresh one now, so the next
        event does not pay for it. If the fresh one fails to start, the next call retries."""
        self.discard(plugin)
        try:
            self.instance(host, plugin)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            log.warning(
                "plugin %s: new instance failed to start: %s", plugin.name, _first_line(exc)
            )


class EpochTicker:
    """Advances the engine epoch every ``interval`` seconds (the deadline's resolution) while
    a plugin call is in flight (``enter``/``leave``), and sleeps without a timeout otherwise.

    Why not tick all the time: an API process serving reads runs no plugin at all, and each
    tick wakes this thread, which then takes the GIL from the event loop's thread (twice:
    ``increment_epoch`` goes through ctypes). Ticking idly was 100 wake-ups a second in every
    ``arcana serve``, the most of any thread beside the gRPC ones, also under a read load
    (``bench/grpc.py --wakeups``, ``bench/RESULTS.md``). A call's deadline counts ticks from
    its own start (``set_epoch_deadline`` is relative to the current epoch), so ticks that did
    not happen while nothing ran change no deadline."""

    def __init__(self, engine: wasmtime.Engine, interval: float) -> None:
        self.engine = engine
        self.interval = interval
        self._stop = threading.Event()
        self._wake = threading.Condition(threading.Lock())
        self._busy = 0  # calls in flight, under ``_wake``'s lock
        self.parked = False  # waiting for a call, under ``_wake``'s lock (tests look)
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="plugin-epoch", daemon=True)
        self._thread.start()

    def enter(self) -> None:
        """A call starts: tick until every call has left."""
        with self._wake:
            self._busy += 1
            if self._busy == 1:
                self._wake.notify()

    def leave(self) -> None:
        with self._wake:
            self._busy -= 1

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                while self._busy == 0 and not self._stop.is_set():
                    self.parked = True
                    self._wake.wait()
                self.parked = False
            # ``_busy`` read without the lock: a call entering just after it reads 0 finds the
            # thread parked (or about to park) and wakes it under the lock.
            while self._busy and not self._stop.wait(self.interval):
                self.engine.increment_epoch()

    def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None


@dataclass(frozen=True, slots=True)
class CheckReport:
    """``arcana plugins check``: what the sample event returned and what it cost."""

    name: str
    digest: str
    version: int | None
    code: int
    fuel_used: int
    micros: float
    has_alloc: bool
    uses_wasi: bool
    has_dealloc: bool = False
    output: str = ""


class PluginHost:
    def __init__(
        self,
        directory: Path,
        limits: PluginLimits | None = None,
        *,
        cache_dir: Path | None = None,
        cache_key: bytes | None = None,
        fast_calls: bool = True,
        clock: Clock | None = None,
    ) -> None:
        """``cache_dir`` keeps compiled artifacts across restarts, only with ``cache_key`` (the
        server secret) to authenticate them; ``clock`` replaces the clocks plugins read (tests
        pass a fixed one)."""
        self.directory = directory
        self.limits = limits or PluginLimits()
        self.fast_calls = fast_calls
        config = wasmtime.Config()
        config.consume_fuel = True
        config.epoch_interruption = True
        self.engine = wasmtime.Engine(config)
        self.linker = wasmtime.Linker(self.engine)
        define_host_wasi(self.linker, clock or real_clock)
        self.compiler = ModuleCompiler(
            self.engine,
            self.linker,
            cache_dir,
            cache_key=cache_key,
            caps=ResourceCaps(
                memory_bytes=self.limits.memory_bytes, table_elements=self.limits.table_elements
            ),
        )
        # Deadline resolution: a tick a fifth of the timeout (1..10 ms); the deadline is the
        # number of ticks that covers the timeout, plus one for the partial tick we start in.
        tick_ms = min(10.0, max(1.0, self.limits.timeout_ms / 5))
        self.deadline_ticks = math.ceil(self.limits.timeout_ms / tick_ms) + 1
        self.ticker = EpochTicker(self.engine, tick_ms / 1000)
        self._set = PluginSet([])
        self._reload_lock = threading.Lock()
        self.generation = 0

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.ticker.start()

    def close(self) -> None:
        self.ticker.stop()

    @property
    def current(self) -> PluginSet:
        return self._set

    def load_all(self) -> list[PluginStatus]:
        """(Re)load every plugin file and swap the set in atomically. A module that fails to
        load is kept as ``failed`` with its reason; the others load."""
        with self._reload_lock:
            plugins = [self._load(path) for path in plugin_files(self.directory)]
            self._set = PluginSet(plugins)
            self.generation += 1
            self._gauge(self._set)
        for p in plugins:
            if p.state == "failed":
                log.warning("plugin %s failed to load: %s", p.name, p.error)
            else:
                log.info("plugin %s loaded (version %s)", p.name, p.version)
        return [p.status() for p in plugins]

    def _load(self, path: Path) -> Plugin:
        try:
            module = self.compiler.load(path)
        except PluginLoadError as exc:
            return Plugin(name=path.stem, path=path, module=None, state="failed", error=str(exc))
        plugin = Plugin(name=module.name, path=path, module=module)
        self.ticker.enter()
        try:
            plugin.version = PluginInstance(self, module).version()
        except Exception as exc:  # a trap in its start function, or in get_plugin_version
            plugin.state = "failed"
            plugin.error = f"{path.name}: failed to start: {_first_line(exc)}"
        finally:
            self.ticker.leave()
        return plugin

    def statuses(self) -> list[PluginStatus]:
        return [p.status() for p in self._set.plugins]

    def has_active(self) -> bool:
        """Whether ``run`` would call any plugin now."""
        return any(p.state == "active" for p in self._set.plugins)

    # -- calls ----------------------------------------------------------------------------------
    def run(self, payload: bytes) -> list[tuple[str, int]]:
        """Run every active plugin on one event (JSON bytes) in this thread; never raises.
        Returns ``[(plugin, code)]`` in load order."""
        current = self._set
        results: list[tuple[str, int]] = []
        for plugin in current.plugins:
            if plugin.state != "active":
                continue
            results.append((plugin.name, self.call(current, plugin, payload)))
        return results

    def call(self, current: PluginSet, plugin: Plugin, payload: bytes) -> int:
        self.ticker.enter()  # the deadline needs ticks, also for a fresh instance's start
        try:
            return self._call(current, plugin, payload)
        finally:
            self.ticker.leave()

    def _call(self, current: PluginSet, plugin: Plugin, payload: bytes) -> int:
        started = time.perf_counter_ns()
        inst: PluginInstance | None = None
        try:
            inst = current.instance(self, plugin)
            if tracing.ENABLED:
                with tracing.span("plugin.call", {"arcana.plugin": plugin.name}):
                    code = inst.call(payload)
            else:
                code = inst.call(payload)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            code = classify(exc)
            # The instance may be half-way through anything: build a fresh one next time.
            current.discard(plugin)
            log.warning("plugin %s call failed (%d): %s", plugin.name, code, _first_line(exc))
        except Exception:
            code = TRAPPED
            current.discard(plugin)
            log.exception("plugin %s call failed", plugin.name)
        micros = (time.perf_counter_ns() - started) / 1000
        outcome = "error" if code < 0 else "flag" if code == 1 else "ok"
        plugin.metric(outcome).inc()
        plugin.duration_metric().observe(micros / 1e6)
        if plugin.record(code, micros, self.limits.max_failures):
            PLUGIN_DISABLED.labels(plugin.name).inc()
            self._gauge(current)
            log.warning("plugin %s disabled: %s", plugin.name, plugin.error)
        if inst is not None:
            # After the call is timed and counted: the event has its answer already.
            if inst.output.chunks or inst.output.dropped:
                self._log_output(plugin, inst.output)
            if inst.worn_out:
                self._recycle(current, plugin)
        return code

    def _log_output(self, plugin: Plugin, output: PluginOutput) -> None:
        streams, dropped = output.take()
        for stream, text in streams:
            output_log.log(
                logging.WARNING if stream == "stderr" else logging.INFO,
                "plugin %s %s: %s",
                plugin.name,
                stream,
                text,
                extra={"plugin": plugin.name, "stream": stream},
            )
        if dropped:
            with plugin.lock:
                plugin.output_dropped += dropped
            PLUGIN_OUTPUT_DROPPED.labels(plugin.name).inc(dropped)
            output_log.warning(
                "plugin %s output: %d bytes past the %d-byte bound of one call dropped",
                plugin.name,
                dropped,
                OUTPUT_LIMIT,
                extra={"plugin": plugin.name, "dropped_bytes": dropped},
            )

    def _recycle(self, current: PluginSet, plugin: Plugin) -> None:
        with plugin.lock:
            plugin.recycled += 1
        PLUGIN_RECYCLED.labels(plugin.name).inc()
        current.renew(self, plugin)

    def _gauge(self, current: PluginSet) -> None:
        for state in ("active", "disabled", "failed"):
            PLUGINS_LOADED.labels(state).set(sum(p.state == state for p in current.plugins))

    # -- arcana plugins check -------------------------------------------------------------------
    def check(self, path: Path, payload: bytes) -> CheckReport:
        """Load ``path`` alone (not into the set), run ``payload`` once; raises
        ``PluginLoadError`` if the module is not a usable plugin."""
        module = self.compiler.load(path)
        self.ticker.enter()
        try:
            inst = PluginInstance(self, module)
            version = inst.version()
            started = time.perf_counter_ns()
            code = inst.call(payload)
            micros = (time.perf_counter_ns() - started) / 1000
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            raise PluginLoadError(
                f"{path.name}: sample event failed ({classify(exc)}): {_first_line(exc)}"
            ) from None
        finally:
            self.ticker.leave()
        fuel_used = self.limits.fuel - inst.store.get_fuel()
        streams, _ = inst.output.take()
        return CheckReport(
            name=module.name,
            digest=module.digest,
            version=version,
            code=code,
            fuel_used=fuel_used,
            micros=micros,
            has_alloc=module.has_alloc,
            uses_wasi=module.uses_wasi,
            has_dealloc=module.has_dealloc,
            output="\n".join(f"{stream}: {text}" for stream, text in streams),
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
