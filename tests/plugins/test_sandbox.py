"""What real toolchains emit, against real wasmtime: every WASI preview 1 import alone and all
together, plugins without ``dealloc``, output to the log, sleeping, the clock; and the sandbox:
every memory and table capped, the compile cache authenticated. Each corpus module in
``plugins/testdata`` loads or is refused with the named reason, and every loaded one keeps
answering after 10,000 calls (made through the host's synchronous call path)."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from arcana.adapters.plugins import loader
from arcana.adapters.plugins.host import TIMED_OUT, Plugin, PluginHost, PluginLimits
from arcana.adapters.plugins.loader import FORBIDDEN_WASI, WASI_PREVIEW1
from arcana.adapters.plugins.sink import encode_event
from arcana.adapters.plugins.wasi import OUTPUT_LIMIT
from arcana.domain.audit import AuditEvent
from tests.process import arcana_bin

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = ROOT / "plugins" / "testdata"
WASI_ALONE = TESTDATA / "wasi"
EVENT = encode_event(AuditEvent("user.data_access", "u1", "products", "export", {"rows": 3}))
FIXED_NS = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z
CACHE_KEY = b"server secret for the plugin cache tests"

HostFactory = Callable[..., PluginHost]


@pytest.fixture
def host_factory(tmp_path: Path) -> Iterator[HostFactory]:
    hosts: list[PluginHost] = []

    def make(*files: Path, **kwargs: object) -> PluginHost:
        d = tmp_path / f"plugins{len(hosts)}"
        d.mkdir()
        for f in files:
            shutil.copy(f, d / f.name)
        # A generous deadline unless a test is about the deadline: thousands of calls in a row
        # on a shared machine must not turn a descheduled thread into a failed call.
        limits = PluginLimits(**{"timeout_ms": 10_000, **kwargs.pop("limits", {})})  # type: ignore[arg-type]
        host = PluginHost(d, limits, **kwargs)  # type: ignore[arg-type]
        host.start()
        host.load_all()
        hosts.append(host)
        return host

    yield make
    for h in hosts:
        h.close()


def only(host: PluginHost) -> Plugin:
    [plugin] = host.current.plugins
    return plugin


def answers(host: PluginHost, n: int, payload: bytes = EVENT) -> set[int]:
    """The distinct codes of ``n`` calls of the (only) plugin through ``PluginHost.call``."""
    current = host.current
    plugin = only(host)
    return {host.call(current, plugin, payload) for _ in range(n)}


# -- WASI preview 1 ---------------------------------------------------------------------------


def test_the_corpus_has_one_module_per_wasi_function() -> None:
    assert sorted(p.stem for p in WASI_ALONE.glob("*.wat")) == sorted(WASI_PREVIEW1)


@pytest.mark.parametrize("name", sorted(WASI_PREVIEW1))
def test_each_wasi_import_alone(host_factory: HostFactory, name: str) -> None:
    host = host_factory(WASI_ALONE / f"{name}.wat")
    status = host.statuses()[0]
    if name in FORBIDDEN_WASI:
        assert status.state == "failed"
        assert status.error == (
            f"{name}.wat: imports wasi_snapshot_preview1.{name}; network access is not allowed"
        )
        return
    assert status.state == "active", status.error
    assert answers(host, 10_000) == {0}
    assert only(host).errors == 0


def test_all_wasi_imports_together_answer_as_promised(
    host_factory: HostFactory, caplog: pytest.LogCaptureFixture
) -> None:
    host = host_factory(TESTDATA / "wasistartup.wat")
    assert host.statuses()[0].state == "active", host.statuses()[0].error
    with caplog.at_level(logging.INFO, logger="arcana.plugins.output"):
        assert answers(host, 100) == {1}
    lines = [r for r in caplog.records if r.name == "arcana.plugins.output"]
    assert len(lines) == 100
    assert lines[0].getMessage() == "plugin wasistartup stdout: plugin started"
    assert getattr(lines[0], "plugin", None) == "wasistartup"
    with caplog.at_level(logging.ERROR, logger="arcana.plugins.output"):
        assert answers(host, 9_900) == {1}


def test_wasi_import_of_an_unknown_function_or_module_is_refused(
    host_factory: HostFactory, tmp_path: Path
) -> None:
    unknown = tmp_path / "unknown.wat"
    unknown.write_text(
        '(module (import "wasi_snapshot_preview1" "fd_teleport" (func (param i32) (result i32)))'
        ' (memory (export "memory") 1)'
        ' (func (export "on_audit_event") (param i32 i32) (result i32) (i32.const 0)))'
    )
    wrongtype = tmp_path / "wrongtype.wat"
    wrongtype.write_text(
        '(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32) (result i32)))'
        ' (memory (export "memory") 1)'
        ' (func (export "on_audit_event") (param i32 i32) (result i32) (i32.const 0)))'
    )
    host = host_factory(unknown, wrongtype, TESTDATA / "envimport.wat")
    errors = {s.name: s.error for s in host.statuses()}
    assert errors["unknown"] == (
        "unknown.wat: imports wasi_snapshot_preview1.fd_teleport, "
        "which is not a WASI preview 1 function"
    )
    assert "imports wasi_snapshot_preview1.fd_write with the wrong type" in str(errors["wrongtype"])
    assert "imports env.log; only WASI preview 1" in str(errors["envimport"])


def test_plugin_output_goes_to_the_log_bounded_per_call(
    host_factory: HostFactory, caplog: pytest.LogCaptureFixture
) -> None:
    host = host_factory(TESTDATA / "chatty.wat")
    with caplog.at_level(logging.INFO, logger="arcana.plugins.output"):
        assert answers(host, 3) == {0}
    records = [r for r in caplog.records if r.name == "arcana.plugins.output"]
    stdout = [r for r in records if getattr(r, "stream", None) == "stdout"]
    stderr = [r for r in records if getattr(r, "stream", None) == "stderr"]
    assert [r.getMessage() for r in stdout] == [f"plugin chatty stdout: {EVENT.decode()}"] * 3
    kept = OUTPUT_LIMIT - len(EVENT)
    assert [r.getMessage() for r in stderr] == ["plugin chatty stderr: " + "!" * kept] * 3
    assert all(r.levelno == logging.WARNING for r in stderr)
    dropped = 6000 - kept
    assert [getattr(r, "dropped_bytes", None) for r in records if "dropped" in r.getMessage()] == [
        dropped
    ] * 3
    assert host.statuses()[0].output_dropped == 3 * dropped
    with caplog.at_level(logging.ERROR, logger="arcana.plugins.output"):
        assert answers(host, 9_997) == {0}
    assert host.statuses()[0].output_dropped == 10_000 * dropped


def test_a_sleep_ends_at_the_call_deadline(host_factory: HostFactory) -> None:
    host = host_factory(TESTDATA / "sleeper.wat", limits={"timeout_ms": 50})
    started = time.monotonic()
    assert answers(host, 3) == {TIMED_OUT}
    # Each call asked to sleep 60 s; the three ended at their deadlines.
    assert time.monotonic() - started < 60
    assert only(host).errors == 3


def test_a_sleep_within_the_deadline_completes(host_factory: HostFactory) -> None:
    host = host_factory(TESTDATA / "napper.wat", limits={"timeout_ms": 5_000})
    assert answers(host, 20) == {1}


def test_plugins_can_run_against_a_fixed_clock(host_factory: HostFactory) -> None:
    fixed = host_factory(TESTDATA / "clock.wat", clock=lambda _clock_id: FIXED_NS)
    assert answers(fixed, 10_000) == {(FIXED_NS // 1_000_000_000) % 1000}
    real = host_factory(TESTDATA / "clock.wat")
    before = int(time.time()) % 1000
    [code] = answers(real, 1)
    assert code in {before, (before + 1) % 1000}


# -- alloc without dealloc --------------------------------------------------------------------


def test_a_plugin_without_dealloc_takes_200000_events_in_a_row(host_factory: HostFactory) -> None:
    host = host_factory(TESTDATA / "leaky.wat")  # the 16 MiB default cap
    plugin = only(host)
    assert plugin.state == "active"
    assert plugin.version == 4
    current = host.current
    codes = [host.call(current, plugin, EVENT) for _ in range(200_000)]
    assert set(codes) == {1}
    status = host.statuses()[0]
    assert (status.calls, status.errors) == (200_000, 0)
    # 200,000 never-freed buffers do not fit in one 16 MiB instance: it was replaced (before
    # its memory ran out, or a call would have failed) at least this many times.
    assert status.recycled >= 200_000 * len(EVENT) // (16 * 1024 * 1024) >= 1
    assert status.to_dict()["recycled"] == status.recycled


def test_a_plugin_without_dealloc_with_a_small_cap(host_factory: HostFactory) -> None:
    host = host_factory(TESTDATA / "leaky.wat", limits={"memory_bytes": 1024 * 1024})
    assert answers(host, 10_000) == {1}
    assert only(host).recycled > 0
    assert only(host).errors == 0


# -- memories and tables ----------------------------------------------------------------------


def test_what_could_never_fit_is_refused_at_load(host_factory: HostFactory) -> None:
    host = host_factory(
        TESTDATA / "multimemory.wat", TESTDATA / "hugetable.wat", TESTDATA / "bigmemory.wat"
    )
    errors = {s.name: s.error for s in host.statuses()}
    assert errors == {
        "bigmemory": "bigmemory.wat: memory needs 32768 KiB at start; the cap is 16384 KiB",
        "hugetable": "hugetable.wat: a table of 10000000 elements at start; the cap is 65536",
        "multimemory": "multimemory.wat: defines 2 memories; a plugin may have 1",
    }


def test_a_table_cannot_grow_past_its_cap(host_factory: HostFactory) -> None:
    host = host_factory(TESTDATA / "tablegrower.wat")
    assert answers(host, 10_000) == {0}  # every grow refused, nothing trapped
    roomy = host_factory(TESTDATA / "tablegrower.wat", limits={"table_elements": 200_001})
    assert answers(roomy, 3) == {1, 0}  # two grows of 100 000 fit, the third is refused


# -- the compile cache ------------------------------------------------------------------------


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Forget what this process compiled, as a restart would."""

    def forget() -> None:
        monkeypatch.setattr(loader, "_COMPILED", {})

    forget()
    return forget


def test_a_tampered_cache_artifact_is_never_deserialized(
    tmp_path: Path, fresh_process: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "plugins"
    d.mkdir()
    shutil.copy(TESTDATA / "bump.wat", d / "bump.wat")
    cache = tmp_path / "cache"
    first = PluginHost(d, cache_dir=cache, cache_key=CACHE_KEY)
    first.load_all()
    [artifact] = cache.glob("*.cwasm")
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))

    deserialized: list[bytes] = []
    real = loader.wasmtime.Module.deserialize

    def spy(engine: object, blob: bytes) -> object:
        deserialized.append(bytes(blob))
        return real(engine, blob)  # type: ignore[arg-type]

    monkeypatch.setattr(loader.wasmtime.Module, "deserialize", staticmethod(spy))
    fresh_process()
    second = PluginHost(d, cache_dir=cache, cache_key=CACHE_KEY)
    second.load_all()
    assert deserialized == []  # the tampered bytes never reached wasmtime
    assert (second.compiler.cache_rejected, second.compiler.compiled) == (1, 1)
    assert second.statuses()[0].state == "active"
    # The entry was rewritten with a valid tag: the next start uses it.
    fresh_process()
    third = PluginHost(d, cache_dir=cache, cache_key=CACHE_KEY)
    third.load_all()
    assert (third.compiler.cache_hits, third.compiler.compiled) == (1, 0)
    # Another server secret does not accept it.
    fresh_process()
    other = PluginHost(d, cache_dir=cache, cache_key=b"another secret")
    other.load_all()
    assert (other.compiler.cache_rejected, other.compiler.compiled) == (1, 1)


def test_a_valid_artifact_under_another_modules_digest_is_refused(
    tmp_path: Path, fresh_process: Callable[[], None]
) -> None:
    d = tmp_path / "plugins"
    d.mkdir()
    shutil.copy(TESTDATA / "trapper.wat", d / "trapper.wat")
    shutil.copy(TESTDATA / "legacy.wat", d / "legacy.wat")
    cache = tmp_path / "cache"
    PluginHost(d, cache_dir=cache, cache_key=CACHE_KEY).load_all()
    compiler = PluginHost(d, cache_dir=cache, cache_key=CACHE_KEY).compiler
    legacy_digest = hashlib.sha256((d / "legacy.wat").read_bytes()).hexdigest()
    trapper_digest = hashlib.sha256((d / "trapper.wat").read_bytes()).hexdigest()
    legacy_file = compiler._cache_path(legacy_digest)
    trapper_file = compiler._cache_path(trapper_digest)
    assert legacy_file is not None
    assert trapper_file is not None
    shutil.copy(trapper_file, legacy_file)  # the trapper's code under the legacy's name
    fresh_process()
    host = PluginHost(d, cache_dir=cache, cache_key=CACHE_KEY)
    host.start()
    try:
        host.load_all()
        assert host.compiler.cache_rejected == 1
        assert host.run(EVENT)[0] == ("legacy", 1)
    finally:
        host.close()


def test_without_a_key_the_cache_stays_in_memory(
    tmp_path: Path, fresh_process: Callable[[], None]
) -> None:
    d = tmp_path / "plugins"
    d.mkdir()
    shutil.copy(TESTDATA / "legacy.wat", d / "legacy.wat")
    cache = tmp_path / "cache"
    PluginHost(d, cache_dir=cache).load_all()
    assert not cache.exists()


# -- arcana plugins check ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("audit-c.wasm", "audit-c: ok (version 1, alloc/dealloc, WASI)"),
        (
            "testdata/leaky.wat",
            "leaky: ok (version 4, alloc without dealloc, instance renewed near the memory cap)",
        ),
    ],
)
def test_cli_check_of_what_toolchains_emit(tmp_path: Path, file: str, expected: str) -> None:
    ok = subprocess.run(
        [arcana_bin(), "plugins", "check", str(ROOT / "plugins" / file)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "ARCANA_VAR_DIR": str(tmp_path / "var")},
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0] == expected
    assert "-> 1" in ok.stdout


def test_check_reports_what_the_plugin_wrote(tmp_path: Path) -> None:
    host = PluginHost(tmp_path)
    host.start()
    try:
        report = host.check(TESTDATA / "wasistartup.wat", EVENT)
    finally:
        host.close()
    assert report.code == 1
    assert report.output == "stdout: plugin started"


def test_cli_check_refuses_what_could_never_fit(tmp_path: Path) -> None:
    bad = subprocess.run(
        [arcana_bin(), "plugins", "check", str(ROOT / "plugins" / "testdata" / "multimemory.wat")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "ARCANA_VAR_DIR": str(tmp_path / "var")},
        cwd=tmp_path,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip() == "error: multimemory.wat: defines 2 memories; a plugin may have 1"
