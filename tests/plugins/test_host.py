"""The plugin host against real wasmtime: ABI variants, load checks, every limit, the circuit
breaker, reload under concurrent calls, the compile cache."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from arcana.adapters.plugins import loader
from arcana.adapters.plugins.calls import FAST_CALL_SUPPORTED, FastCall, SlowCall
from arcana.adapters.plugins.host import (
    OUT_OF_FUEL,
    TIMED_OUT,
    TRAPPED,
    PluginHost,
    PluginLimits,
)
from arcana.adapters.plugins.sink import encode_event
from arcana.domain.audit import AuditEvent

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = ROOT / "plugins" / "testdata"
EVENT = encode_event(
    AuditEvent("admin.config_change", "u1", "plugins", "reload", metadata={"a": [1, "b"]})
)


CACHE_KEY = b"server secret for the plugin cache tests"


def make_dir(tmp_path: Path, *names: str) -> Path:
    d = tmp_path / "plugins"
    d.mkdir(exist_ok=True)
    for name in names:
        src = TESTDATA / name if (TESTDATA / name).exists() else ROOT / "plugins" / name
        shutil.copy(src, d / name)
    return d


@pytest.fixture
def host_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    hosts: list[PluginHost] = []

    def make(*names: str, fast: bool = True, **limits: int) -> PluginHost:
        host = PluginHost(make_dir(tmp_path, *names), PluginLimits(**limits), fast_calls=fast)
        host.start()
        host.load_all()
        hosts.append(host)
        return host

    yield make
    for h in hosts:
        h.close()


def by_name(host: PluginHost) -> dict[str, dict[str, object]]:
    return {s.name: s.to_dict() for s in host.statuses()}


def test_event_json_is_compact_in_contract_order() -> None:
    text = EVENT.decode()
    assert " " not in text
    assert text.startswith('{"event_type":"admin.config_change","user_id":"u1","resource"')
    assert list(__import__("json").loads(text)) == [
        "event_type",
        "user_id",
        "resource",
        "action",
        "timestamp",
        "metadata",
    ]


@pytest.mark.parametrize("fast", [True, False])
def test_abi_variants(host_factory, fast: bool) -> None:  # type: ignore[no-untyped-def]
    host = host_factory("bump.wat", "legacy.wat", "wasienv.wat", fast=fast)
    # bump: alloc/dealloc (answers -3 if the buffer it gets is not live); legacy: no alloc,
    # answers 1 only if its data at offset 0 survived; wasienv: WASI with no environment.
    for _ in range(3):
        assert host.run(EVENT) == [("bump", 1), ("legacy", 1), ("wasienv", 0)]
    statuses = by_name(host)
    assert statuses["bump"]["version"] == 3
    assert statuses["legacy"]["version"] == 2
    assert statuses["wasienv"]["version"] is None
    assert statuses["bump"]["calls"] == 3
    assert statuses["bump"]["flags"] == 3


def test_every_buffer_is_given_back(host_factory) -> None:  # type: ignore[no-untyped-def]
    host = host_factory("bump.wat")
    current = host.current
    for _ in range(5):
        host.run(EVENT)
    inst = current.instance(host, current.plugins[0])
    assert current.instance(host, current.plugins[0]) is inst  # reused across calls
    assert inst.exports["live"](inst.store) == 0


def test_refused_at_load_with_a_reason_others_still_load(host_factory) -> None:  # type: ignore[no-untyped-def]
    host = host_factory(
        "envimport.wat", "socket.wat", "nodealloc.wat", "noexport.wat", "legacy.wat"
    )
    s = by_name(host)
    assert s["legacy"]["state"] == "active"
    assert s["envimport"]["state"] == "failed"
    assert "env.log" in str(s["envimport"]["error"])
    assert "wasi_snapshot_preview1.sock_send" in str(s["socket"]["error"])
    assert s["nodealloc"]["state"] == "active"  # alloc without dealloc is valid (contract §6)
    assert "on_audit_event" in str(s["noexport"]["error"])
    assert host.run(EVENT) == [("legacy", 1), ("nodealloc", 0)]


def test_wasm_wins_over_wat_of_the_same_stem(tmp_path: Path) -> None:
    d = make_dir(tmp_path, "trapper.wat")
    shutil.copy(ROOT / "plugins" / "audit.wasm", d / "trapper.wasm")
    host = PluginHost(d)
    statuses = host.load_all()
    assert [(s.name, s.file) for s in statuses] == [("trapper", "trapper.wasm")]


@pytest.mark.parametrize("fast", [True, False])
def test_fuel_stops_a_loop(host_factory, fast: bool) -> None:  # type: ignore[no-untyped-def]
    host = host_factory("looper.wat", "legacy.wat", fast=fast, fuel=100_000, timeout_ms=60_000)
    assert host.run(EVENT) == [("legacy", 1), ("looper", OUT_OF_FUEL)]


def test_deadline_stops_a_loop(host_factory) -> None:  # type: ignore[no-untyped-def]
    host = host_factory("looper.wat", fuel=10**15, timeout_ms=20)
    assert host.run(EVENT) == [("looper", TIMED_OUT)]
    assert by_name(host)["looper"]["errors"] == 1


@pytest.mark.parametrize("fast", [True, False])
def test_trap_is_isolated_and_the_instance_rebuilt(host_factory, fast: bool) -> None:  # type: ignore[no-untyped-def]
    host = host_factory("trapper.wat", "bump.wat", fast=fast)
    for _ in range(3):
        assert host.run(EVENT) == [("bump", 1), ("trapper", TRAPPED)]
    s = by_name(host)
    assert s["trapper"]["errors"] == 3
    assert s["bump"]["errors"] == 0


def test_memory_cap(host_factory) -> None:  # type: ignore[no-untyped-def]
    host = host_factory("hog.wat", memory_bytes=2 * 1024 * 1024)
    [(name, pages)] = host.run(EVENT)
    assert name == "hog"
    assert 0 < pages * 65536 <= 2 * 1024 * 1024


def test_circuit_breaker_disables_until_reload(host_factory) -> None:  # type: ignore[no-untyped-def]
    host = host_factory("trapper.wat", "legacy.wat", max_failures=3)
    for _ in range(3):
        host.run(EVENT)
    assert by_name(host)["trapper"]["state"] == "disabled"
    assert host.run(EVENT) == [("legacy", 1)]
    host.load_all()
    assert by_name(host)["trapper"]["state"] == "active"


def test_success_resets_the_failure_streak(host_factory) -> None:  # type: ignore[no-untyped-def]
    host = host_factory("legacy.wat", max_failures=2)
    plugin = host.current.plugins[0]
    plugin.record(-1, 1.0, 2)
    plugin.record(0, 1.0, 2)
    plugin.record(-1, 1.0, 2)
    assert plugin.state == "active"


def test_reload_under_concurrent_calls(host_factory) -> None:  # type: ignore[no-untyped-def]
    host = host_factory("audit.wasm", "legacy.wat", "bump.wat")
    expected = [("audit", 1), ("bump", 1), ("legacy", 1)]
    errors: list[object] = []
    stop = threading.Event()
    counts = [0, 0, 0]

    def worker(i: int) -> None:
        try:
            while not stop.is_set():
                result = host.run(EVENT)
                if result != expected:
                    errors.append(result)
                counts[i] += 1
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for _ in range(15):
        host.load_all()
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert all(c > 0 for c in counts)


def test_compiled_modules_are_cached_by_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A restart: nothing compiled in this process yet, only the cache directory survives.
    monkeypatch.setattr(loader, "_COMPILED", {})
    d = make_dir(tmp_path, "audit.wasm", "legacy.wat")
    cache = tmp_path / "cache"
    first = PluginHost(d, cache_dir=cache, cache_key=CACHE_KEY)
    first.load_all()
    assert (first.compiler.compiled, first.compiler.cache_hits) == (2, 0)
    assert len(list(cache.glob("*.cwasm"))) == 2
    monkeypatch.setattr(loader, "_COMPILED", {})
    second = PluginHost(d, cache_dir=cache, cache_key=CACHE_KEY)
    second.load_all()
    assert (second.compiler.compiled, second.compiler.cache_hits) == (0, 2)
    assert second.run(EVENT) == [("audit", 1), ("legacy", 1)]


def test_fast_calls_are_used_on_the_pinned_version() -> None:
    import importlib.metadata

    major = int(importlib.metadata.version("wasmtime").split(".")[0])
    assert (major == 50) == FAST_CALL_SUPPORTED


@pytest.mark.parametrize("fast", [True, False])
def test_call_path_in_use(host_factory, fast: bool) -> None:  # type: ignore[no-untyped-def]
    host = host_factory("bump.wat", fast=fast)
    current = host.current
    inst = current.instance(host, current.plugins[0])
    expected = FastCall if fast and FAST_CALL_SUPPORTED else SlowCall
    assert type(inst.on_event) is expected
    assert type(inst.alloc) is expected


def test_offset_zero_would_corrupt_a_legacy_plugin(host_factory) -> None:  # type: ignore[no-untyped-def]
    """What the reference did (JSON written at offset 0) overwrites the plugin's own data; the
    host's buffer at the end of memory does not."""
    import wasmtime

    engine = wasmtime.Engine()
    module = wasmtime.Module(engine, (TESTDATA / "legacy.wat").read_text())
    store = wasmtime.Store(engine)
    instance = wasmtime.Instance(store, module, [])
    exports = instance.exports(store)
    exports["memory"].write(store, EVENT, 0)
    assert exports["on_audit_event"](store, 0, len(EVENT)) == -2  # its data is gone
    assert host_factory("legacy.wat").run(EVENT) == [("legacy", 1)]
