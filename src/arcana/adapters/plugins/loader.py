"""Loading a plugin module: read, compile once (cached by digest), check the ABI and imports.

A module that breaks the ABI is refused here, with a message that names the problem, so a bad
plugin never reaches the call path.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import wasmtime

log = logging.getLogger(__name__)

WASI_MODULE = "wasi_snapshot_preview1"
# With nothing preopened these could do nothing useful, but sockets are network access and a
# plugin has no business asking for it: refuse the module rather than hand it a stub.
FORBIDDEN_WASI = frozenset({"sock_accept", "sock_recv", "sock_send", "sock_shutdown", "sock_open"})
# Capabilities a plugin is never granted (contract §6: no files). Importing a function that
# only makes sense with them is refused at load, naming the import, instead of linking a stub
# that fails later in the middle of a request.
FILESYSTEM_WASI = frozenset(
    {"fd_prestat_get", "fd_prestat_dir_name", "fd_readdir", "fd_renumber", "fd_allocate"}
)
# No clock either: an audit event carries its own timestamp, and a plugin that reads time (or
# sleeps through poll_oneoff) is non-deterministic and can stall the call.
CLOCK_WASI = frozenset({"clock_time_get", "clock_res_get", "poll_oneoff"})

I32 = wasmtime.ValType.i32()

# Serialized artifacts compiled in this process, by digest: every engine here is built with the
# same settings, so a second container (tests, the CLI) deserializes in milliseconds instead
# of compiling for a second or more.
_COMPILED: dict[str, bytes] = {}


class PluginLoadError(Exception):
    """The module cannot be used as a plugin; the message is one line for an operator."""


@dataclass(frozen=True, slots=True)
class PluginModule:
    """A compiled, checked module. Immutable and safe to share between threads."""

    name: str
    path: Path
    digest: str
    module: wasmtime.Module
    pre: wasmtime.InstancePre
    has_alloc: bool
    has_version: bool
    uses_wasi: bool


def plugin_files(directory: Path) -> list[Path]:
    """``*.wasm`` and ``*.wat`` in ``directory``; a ``.wasm`` wins over a ``.wat`` of the same
    stem. Sorted by name so results come back in a stable order."""
    if not directory.is_dir():
        return []
    chosen: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.suffix not in (".wasm", ".wat"):
            continue
        current = chosen.get(path.stem)
        if current is None or (current.suffix == ".wat" and path.suffix == ".wasm"):
            chosen[path.stem] = path
    return [chosen[k] for k in sorted(chosen)]


def _engine_tag() -> str:
    try:
        return "wasmtime-" + importlib.metadata.version("wasmtime")
    except Exception:
        return "wasmtime-unknown"


class ModuleCompiler:
    """Compiles modules for one engine; serialized artifacts are kept under ``cache_dir`` by the
    source digest, so a restart deserializes instead of recompiling."""

    def __init__(self, engine: wasmtime.Engine, linker: wasmtime.Linker, cache_dir: Path | None):
        self.engine = engine
        self.linker = linker
        self.cache_dir = cache_dir
        self.compiled = 0
        self.cache_hits = 0

    def _cache_path(self, digest: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{digest}-{_engine_tag()}.cwasm"

    def compile(self, source: bytes, digest: str) -> wasmtime.Module:
        memo = _COMPILED.get(digest)
        if memo is not None:
            try:
                module = wasmtime.Module.deserialize(self.engine, memo)
                self.cache_hits += 1
                return module
            except Exception:
                _COMPILED.pop(digest, None)
        cached = self._cache_path(digest)
        if cached is not None and cached.is_file():
            try:
                data = cached.read_bytes()
                module = wasmtime.Module.deserialize(self.engine, data)
                _COMPILED[digest] = data
                self.cache_hits += 1
                return module
            except Exception as exc:  # engine settings changed or file damaged: rebuild it
                log.warning("plugin cache entry %s unusable (%s); recompiling", cached.name, exc)
        module = wasmtime.Module(self.engine, source)
        self.compiled += 1
        serialized = bytes(module.serialize())
        _COMPILED[digest] = serialized
        if cached is not None:
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".tmp")
                with os.fdopen(fd, "wb") as fh:
                    fh.write(serialized)
                os.replace(tmp, cached)
            except OSError as exc:
                log.warning("could not write plugin cache %s: %s", cached, exc)
        return module

    def load(self, path: Path) -> PluginModule:
        try:
            source = path.read_bytes()
        except OSError as exc:
            raise PluginLoadError(f"{path.name}: cannot read: {exc.strerror}") from None
        digest = hashlib.sha256(source).hexdigest()
        try:
            if path.suffix == ".wat":
                source = bytes(wasmtime.wat2wasm(source.decode("utf-8", errors="replace")))
            module = self.compile(bytes(source), digest)
        except (wasmtime.WasmtimeError, UnicodeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PluginLoadError(f"{path.name}: not a valid module: {first}") from None
        uses_wasi = check_imports(path.name, module)
        has_alloc, has_version = check_exports(path.name, module)
        try:
            pre = self.linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise PluginLoadError(f"{path.name}: cannot be linked: {first}") from None
        return PluginModule(
            name=path.stem,
            path=path,
            digest=digest,
            module=module,
            pre=pre,
            has_alloc=has_alloc,
            has_version=has_version,
            uses_wasi=uses_wasi,
        )


def check_imports(filename: str, module: wasmtime.Module) -> bool:
    uses_wasi = False
    for imp in module.imports:
        label = f"{imp.module}.{imp.name}"
        if imp.module != WASI_MODULE:
            raise PluginLoadError(
                f"{filename}: imports {label}; only WASI preview 1 ({WASI_MODULE}) is allowed"
            )
        if imp.name in FORBIDDEN_WASI:
            raise PluginLoadError(f"{filename}: imports {label}; network access is not allowed")
        if (imp.name or "").startswith("path_") or imp.name in FILESYSTEM_WASI:
            raise PluginLoadError(
                f"{filename}: imports {label}; plugins are granted no filesystem access"
            )
        if imp.name in CLOCK_WASI:
            raise PluginLoadError(f"{filename}: imports {label}; plugins are granted no clock")
        if not isinstance(imp.type, wasmtime.FuncType):
            raise PluginLoadError(f"{filename}: imports {label}, which is not a function")
        uses_wasi = True
    return uses_wasi


def _func_sig(ty: wasmtime.FuncType) -> tuple[int, int] | None:
    """(params, results) if every one of them is ``i32``."""
    if any(p != I32 for p in ty.params) or any(r != I32 for r in ty.results):
        return None
    return len(ty.params), len(ty.results)


def check_exports(filename: str, module: wasmtime.Module) -> tuple[bool, bool]:
    exports = {e.name: e.type for e in module.exports}
    if not isinstance(exports.get("memory"), wasmtime.MemoryType):
        raise PluginLoadError(f"{filename}: does not export its linear memory as 'memory'")
    expected = {
        "on_audit_event": (2, 1, "on_audit_event(ptr: i32, len: i32) -> i32"),
        "alloc": (1, 1, "alloc(len: i32) -> i32"),
        "dealloc": (2, 0, "dealloc(ptr: i32, len: i32)"),
        "get_plugin_version": (0, 1, "get_plugin_version() -> i32"),
    }
    if "on_audit_event" not in exports:
        raise PluginLoadError(f"{filename}: does not export on_audit_event(ptr: i32, len: i32)")
    for name, (nparams, nresults, text) in expected.items():
        ty = exports.get(name)
        if ty is None:
            continue
        if not isinstance(ty, wasmtime.FuncType) or _func_sig(ty) != (nparams, nresults):
            raise PluginLoadError(f"{filename}: export {name} must be {text}")
    has_alloc = "alloc" in exports
    if has_alloc and "dealloc" not in exports:
        raise PluginLoadError(
            f"{filename}: exports alloc but not dealloc(ptr: i32, len: i32); "
            "every buffer the host takes must be given back"
        )
    return has_alloc, "get_plugin_version" in exports
