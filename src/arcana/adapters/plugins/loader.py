"""Loading a plugin module: read, compile once (cached by digest), check the ABI and imports.

A module that breaks the ABI is refused here, with a message that names the problem, so a bad
plugin never reaches the call path.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.metadata
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import wasmtime

log = logging.getLogger(__name__)

WASI_MODULE = "wasi_snapshot_preview1"
# Every function of WASI preview 1 with its signature (params, results; "i" = i32, "I" = i64).
# All of them link: the host grants nothing, so the file functions answer "bad descriptor",
# preopen discovery answers "none", environment and arguments are empty; clocks and random are
# real. Only the socket functions are refused (below).
WASI_PREVIEW1: dict[str, tuple[str, str]] = {
    "args_get": ("ii", "i"),
    "args_sizes_get": ("ii", "i"),
    "environ_get": ("ii", "i"),
    "environ_sizes_get": ("ii", "i"),
    "clock_res_get": ("ii", "i"),
    "clock_time_get": ("iIi", "i"),
    "fd_advise": ("iIIi", "i"),
    "fd_allocate": ("iII", "i"),
    "fd_close": ("i", "i"),
    "fd_datasync": ("i", "i"),
    "fd_fdstat_get": ("ii", "i"),
    "fd_fdstat_set_flags": ("ii", "i"),
    "fd_fdstat_set_rights": ("iII", "i"),
    "fd_filestat_get": ("ii", "i"),
    "fd_filestat_set_size": ("iI", "i"),
    "fd_filestat_set_times": ("iIIi", "i"),
    "fd_pread": ("iiiIi", "i"),
    "fd_prestat_get": ("ii", "i"),
    "fd_prestat_dir_name": ("iii", "i"),
    "fd_pwrite": ("iiiIi", "i"),
    "fd_read": ("iiii", "i"),
    "fd_readdir": ("iiiIi", "i"),
    "fd_renumber": ("ii", "i"),
    "fd_seek": ("iIii", "i"),
    "fd_sync": ("i", "i"),
    "fd_tell": ("ii", "i"),
    "fd_write": ("iiii", "i"),
    "path_create_directory": ("iii", "i"),
    "path_filestat_get": ("iiiii", "i"),
    "path_filestat_set_times": ("iiiiIIi", "i"),
    "path_link": ("iiiiiii", "i"),
    "path_open": ("iiiiiIIii", "i"),
    "path_readlink": ("iiiiii", "i"),
    "path_remove_directory": ("iii", "i"),
    "path_rename": ("iiiiii", "i"),
    "path_symlink": ("iiiii", "i"),
    "path_unlink_file": ("iii", "i"),
    "poll_oneoff": ("iiii", "i"),
    "proc_exit": ("i", ""),
    "proc_raise": ("i", "i"),
    "sched_yield": ("", "i"),
    "random_get": ("ii", "i"),
    "sock_accept": ("iii", "i"),
    "sock_recv": ("iiiiii", "i"),
    "sock_send": ("iiiii", "i"),
    "sock_shutdown": ("ii", "i"),
}
# Sockets are network access, which a plugin is never granted (contract §6: "sockets are
# absent"): refused at load, naming the import, rather than linked to a stub.
FORBIDDEN_WASI = frozenset({"sock_accept", "sock_recv", "sock_send", "sock_shutdown"})

MAX_MEMORIES = 1
"""Linear memories per instance: the cap applies per memory, so a second one would double it."""
MAX_TABLES = 4
"""Tables per instance (toolchains emit one function table)."""

I32 = wasmtime.ValType.i32()
PAGE = 65536
MAC_BYTES = 32

# Serialized artifacts compiled in this process, by digest: every engine here is built with the
# same settings, so a second app in this process (tests, the CLI) deserializes in milliseconds
# instead of compiling for a second or more.
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
    has_dealloc: bool
    has_version: bool
    has_initialize: bool
    uses_wasi: bool
    wasi_imports: frozenset[str]


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


@dataclass(frozen=True, slots=True)
class ResourceCaps:
    """What one instance may hold (enforced by the store's limits at run time); a module whose
    declared minimum exceeds them could never instantiate and is refused at load."""

    memory_bytes: int
    table_elements: int
    memories: int = MAX_MEMORIES
    tables: int = MAX_TABLES


class ModuleCompiler:
    """Compiles modules for one engine.

    Serialized artifacts are native code: ``Module.deserialize`` runs whatever it is given. So
    a file in ``cache_dir`` is used only if it carries a valid HMAC-SHA256 (key derived from the
    server secret) over the module digest, the engine version and the artifact; anything else
    (tampered, written for another module, no key configured) is ignored and the module is
    compiled from source. Without a key the cache is memory-only.
    """

    def __init__(
        self,
        engine: wasmtime.Engine,
        linker: wasmtime.Linker,
        cache_dir: Path | None,
        *,
        cache_key: bytes | None = None,
        caps: ResourceCaps | None = None,
    ):
        self.engine = engine
        self.linker = linker
        self.cache_dir = cache_dir if cache_key else None
        self._mac_key = (
            hmac.new(cache_key, b"arcana plugin-cache v1", hashlib.sha256).digest()
            if cache_key
            else b""
        )
        self.caps = caps
        self.compiled = 0
        self.cache_hits = 0
        self.cache_rejected = 0

    def _cache_path(self, digest: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{digest}-{_engine_tag()}.cwasm"

    def _mac(self, digest: str, artifact: bytes) -> bytes:
        mac = hmac.new(self._mac_key, digest.encode(), hashlib.sha256)
        mac.update(b"\0" + _engine_tag().encode() + b"\0")
        mac.update(artifact)
        return mac.digest()

    def _read_cached(self, cached: Path, digest: str) -> bytes | None:
        """The artifact in ``cached`` if its HMAC verifies, else None (and it is counted)."""
        data = cached.read_bytes()
        tag, artifact = data[:MAC_BYTES], data[MAC_BYTES:]
        if len(tag) == MAC_BYTES and hmac.compare_digest(tag, self._mac(digest, artifact)):
            return artifact
        self.cache_rejected += 1
        log.warning("plugin cache entry %s failed its integrity check; recompiling", cached.name)
        return None

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
                artifact = self._read_cached(cached, digest)
                if artifact is not None:
                    module = wasmtime.Module.deserialize(self.engine, artifact)
                    _COMPILED[digest] = artifact
                    self.cache_hits += 1
                    return module
            except Exception as exc:  # engine settings changed or file unreadable: rebuild it
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
                    fh.write(self._mac(digest, serialized))
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
        wasi_imports = check_imports(path.name, module)
        has_alloc, has_dealloc, has_version, has_initialize = check_exports(path.name, module)
        if self.caps is not None:
            check_resources(path.name, bytes(source), self.caps)
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
            has_dealloc=has_dealloc,
            has_version=has_version,
            has_initialize=has_initialize,
            uses_wasi=bool(wasi_imports),
            wasi_imports=wasi_imports,
        )


_VALTYPES = {"i": wasmtime.ValType.i32(), "I": wasmtime.ValType.i64()}


def _wasi_signature(name: str) -> str:
    params, results = WASI_PREVIEW1[name]
    names = {"i": "i32", "I": "i64"}
    return f"({', '.join(names[c] for c in params)}) -> ({', '.join(names[c] for c in results)})"


def check_imports(filename: str, module: wasmtime.Module) -> frozenset[str]:
    """The WASI functions the module imports; raises for anything that can never link."""
    names: set[str] = set()
    for imp in module.imports:
        name = imp.name or ""
        label = f"{imp.module}.{name}"
        if imp.module != WASI_MODULE:
            raise PluginLoadError(
                f"{filename}: imports {label}; only WASI preview 1 ({WASI_MODULE}) is allowed"
            )
        if name in FORBIDDEN_WASI:
            raise PluginLoadError(f"{filename}: imports {label}; network access is not allowed")
        if name not in WASI_PREVIEW1:
            raise PluginLoadError(
                f"{filename}: imports {label}, which is not a WASI preview 1 function"
            )
        ty = imp.type
        params, results = WASI_PREVIEW1[name]
        if (
            not isinstance(ty, wasmtime.FuncType)
            or list(ty.params) != [_VALTYPES[c] for c in params]
            or list(ty.results) != [_VALTYPES[c] for c in results]
        ):
            raise PluginLoadError(
                f"{filename}: imports {label} with the wrong type; "
                f"WASI preview 1 has {name}{_wasi_signature(name)}"
            )
        names.add(name)
    return frozenset(names)


def _func_sig(ty: wasmtime.FuncType) -> tuple[int, int] | None:
    """(params, results) if every one of them is ``i32``."""
    if any(p != I32 for p in ty.params) or any(r != I32 for r in ty.results):
        return None
    return len(ty.params), len(ty.results)


def check_exports(filename: str, module: wasmtime.Module) -> tuple[bool, bool, bool, bool]:
    """(alloc, dealloc, get_plugin_version, _initialize) exported; raises if the ABI is broken."""
    exports = {e.name: e.type for e in module.exports}
    if not isinstance(exports.get("memory"), wasmtime.MemoryType):
        raise PluginLoadError(f"{filename}: does not export its linear memory as 'memory'")
    expected = {
        "on_audit_event": (2, 1, "on_audit_event(ptr: i32, len: i32) -> i32"),
        "alloc": (1, 1, "alloc(len: i32) -> i32"),
        "dealloc": (2, 0, "dealloc(ptr: i32, len: i32)"),
        "get_plugin_version": (0, 1, "get_plugin_version() -> i32"),
        # A WASI "reactor" (e.g. C built with -mexec-model=reactor) runs its constructors here;
        # the host calls it once per instance before anything else.
        "_initialize": (0, 0, "_initialize()"),
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
    # Each of alloc, dealloc and get_plugin_version is optional on its own (contract §6):
    # without dealloc the host never frees (see PluginInstance), without alloc dealloc is unused.
    has_dealloc = "dealloc" in exports
    return has_alloc, has_dealloc, "get_plugin_version" in exports, "_initialize" in exports


# -- resources declared by the binary --------------------------------------------------------
# wasmtime-py lists only exported memories and tables, so the memory and table sections are
# read from the binary itself to see every one the module defines.

_SECTION_IMPORT, _SECTION_TABLE, _SECTION_MEMORY = 2, 4, 5


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated LEB128")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _limits(data: bytes, pos: int) -> tuple[int, int]:
    """(minimum, position after the limits); the flags byte's bits select max/shared/64-bit,
    and a custom page size (bit 3) is followed by its log2."""
    flags = data[pos]
    minimum, pos = _leb(data, pos + 1)
    if flags & 0x01:
        _, pos = _leb(data, pos)
    if flags & 0x08:
        _, pos = _leb(data, pos)
    return minimum, pos


def declared_resources(wasm: bytes) -> tuple[list[int], list[int]]:
    """(minimum pages of each defined memory, minimum elements of each defined table).
    The module has already been validated by wasmtime, so the layout is well formed; imported
    memories and tables are refused by ``check_imports`` before this runs."""
    memories: list[int] = []
    tables: list[int] = []
    pos = 8
    while pos < len(wasm):
        section = wasm[pos]
        size, body = _leb(wasm, pos + 1)
        pos = body + size
        if section == _SECTION_MEMORY:
            count, p = _leb(wasm, body)
            for _ in range(count):
                minimum, p = _limits(wasm, p)
                memories.append(minimum)
        elif section == _SECTION_TABLE:
            count, p = _leb(wasm, body)
            for _ in range(count):
                if wasm[p] == 0x40:  # table with an initialiser expression: 0x40 0x00 type ...
                    raise ValueError("tables with initialiser expressions are not supported")
                p += 1  # reference type (funcref / externref)
                minimum, p = _limits(wasm, p)
                tables.append(minimum)
    return memories, tables


def check_resources(filename: str, wasm: bytes, caps: ResourceCaps) -> None:
    """Refuse a module whose declared minimum could never fit the per-instance caps."""
    try:
        memories, tables = declared_resources(wasm)
    except (ValueError, IndexError) as exc:
        raise PluginLoadError(f"{filename}: cannot read its memories and tables: {exc}") from None
    if len(memories) > caps.memories:
        raise PluginLoadError(
            f"{filename}: defines {len(memories)} memories; a plugin may have {caps.memories}"
        )
    for pages in memories:
        if pages * PAGE > caps.memory_bytes:
            raise PluginLoadError(
                f"{filename}: memory needs {pages * PAGE // 1024} KiB at start; "
                f"the cap is {caps.memory_bytes // 1024} KiB"
            )
    if len(tables) > caps.tables:
        raise PluginLoadError(
            f"{filename}: defines {len(tables)} tables; a plugin may have {caps.tables}"
        )
    for elements in tables:
        if elements > caps.table_elements:
            raise PluginLoadError(
                f"{filename}: a table of {elements} elements at start; "
                f"the cap is {caps.table_elements}"
            )
