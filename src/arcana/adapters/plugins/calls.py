"""Calling an exported wasm function with as little Python overhead as possible.

``wasmtime.Func.__call__`` rebuilds the function type, converts every argument through ``Val``
and allocates fresh ctypes arrays on every call; for a two-``i32`` call that is most of the cost.
``FastCall`` keeps one pre-built argument/result array per function and calls the C API's
``wasmtime_func_call_unchecked`` directly through the package's own ctypes bindings (the
signature was checked once at load, so the per-call type check is not needed). That binding
module is private, so the fast path is used only on the wasmtime-py major version it was
written against (50, pinned in uv.lock) and only if the names it uses are there; anything else
takes ``Func.__call__``, which gives the same results (the tests run both paths).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
from collections.abc import Callable
from typing import Any

import wasmtime

FAST_CALL_MAJOR = 50
"""wasmtime-py major version whose ``_ffi`` layout ``FastCall`` was written for."""


def _fast_call_supported() -> bool:
    try:
        major = int(importlib.metadata.version("wasmtime").split(".")[0])
    except Exception:
        return False
    if major != FAST_CALL_MAJOR:
        return False
    try:
        from wasmtime import _bindings

        return all(
            hasattr(_bindings, name)
            for name in ("_wasmtime_func_call_unchecked", "wasmtime_val_raw", "wasm_trap_t")
        )
    except Exception:
        return False


FAST_CALL_SUPPORTED = _fast_call_supported()


class SlowCall:
    """The public API: ``func(store, *args)``."""

    __slots__ = ("_func", "_store")

    def __init__(self, store: wasmtime.Store, func: wasmtime.Func, nparams: int, nresults: int):
        self._store = store
        self._func = func

    def __call__(self, *args: int) -> Any:
        return self._func(self._store, *args)


class FastCall:
    """Same contract as ``SlowCall`` for functions whose params and results are all ``i32``
    (the loader has checked the exact signature, which is what makes the unchecked call
    sound). Arguments and results share one pre-built ``wasmtime_val_raw_t`` array."""

    __slots__ = ("_args", "_call", "_i32", "_nres", "_raw", "_trap")

    def __init__(self, store: wasmtime.Store, func: wasmtime.Func, nparams: int, nresults: int):
        from wasmtime import _bindings

        self._raw = (_bindings.wasmtime_val_raw * max(nparams, nresults, 1))()
        # The same bytes as i32 slots: value k's i32 is at index k * stride (the union is 16
        # bytes), which sets and reads without building a union object per access.
        stride = ctypes.sizeof(_bindings.wasmtime_val_raw) // 4
        view = (ctypes.c_int32 * (stride * len(self._raw))).from_buffer(self._raw)
        self._i32 = (view, stride)
        self._nres = nresults
        self._trap = ctypes.POINTER(_bindings.wasm_trap_t)()
        self._call = _bindings._wasmtime_func_call_unchecked
        self._args = (
            store._context(),
            ctypes.byref(func._func),
            self._raw,
            max(nparams, nresults),
            ctypes.byref(self._trap),
        )

    def __call__(self, *args: int) -> Any:
        view, stride = self._i32
        for i, value in enumerate(args):
            view[i * stride] = value
        error = self._call(*self._args)
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        if self._trap:
            # Hand the Trap its own copy of the pointer (it frees it), then null ours so the
            # next call starts clean.
            owned = ctypes.cast(self._trap, type(self._trap))
            ctypes.cast(ctypes.byref(self._trap), ctypes.POINTER(ctypes.c_void_p))[0] = None
            raise wasmtime.Trap._from_ptr(owned)
        if self._nres == 0:
            return None
        return int(view[0])


def make_call(
    store: wasmtime.Store, func: wasmtime.Func, nparams: int, nresults: int, *, fast: bool
) -> SlowCall | FastCall:
    if fast and FAST_CALL_SUPPORTED:
        return FastCall(store, func, nparams, nresults)
    return SlowCall(store, func, nparams, nresults)


def make_arm(
    store: wasmtime.Store, fuel: int, deadline_ticks: int, *, fast: bool
) -> Callable[[], None]:
    """Refills the store's fuel and sets its epoch deadline before a call; the fast version
    calls the two C functions directly (same bindings and version gate as ``FastCall``)."""
    if not (fast and FAST_CALL_SUPPORTED):

        def arm_public() -> None:
            store.set_fuel(fuel)
            store.set_epoch_deadline(deadline_ticks)

        return arm_public
    from wasmtime import _bindings

    ctx = store._context()
    set_fuel = _bindings._wasmtime_context_set_fuel
    set_deadline = _bindings._wasmtime_context_set_epoch_deadline

    def arm_fast() -> None:
        error = set_fuel(ctx, fuel)
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        set_deadline(ctx, deadline_ticks)

    return arm_fast


class MemoryWriter:
    """Writes bytes into a plugin's linear memory at a bounds-checked offset."""

    __slots__ = ("_data", "_known", "_memory", "_size", "_store")

    def __init__(self, store: wasmtime.Store, memory: wasmtime.Memory, *, fast: bool) -> None:
        self._store = store
        self._memory = memory
        self._data: Any = None
        self._size: Any = None
        if fast and FAST_CALL_SUPPORTED:
            from wasmtime import _bindings

            ctx = store._context()
            ref = ctypes.byref(memory._memory)
            raw_data = _bindings._wasmtime_memory_data
            raw_size = _bindings._wasmtime_memory_data_size
            self._data = lambda: ctypes.addressof(raw_data(ctx, ref).contents)
            self._size = lambda: raw_size(ctx, ref)
        # Linear memory moves only when it grows, and growing changes its size: the base
        # address is looked up again only when the size differs from the last write's.
        self._known: tuple[int, int] = (-1, 0)

    def size(self) -> int:
        """The memory's current size in bytes."""
        if self._size is None:
            return int(self._memory.data_len(self._store))
        return int(self._size())

    def write(self, offset: int, payload: bytes) -> bool:
        """False (nothing written) if ``[offset, offset + len)`` is not inside memory or
        ``offset`` is 0."""
        if self._data is None:
            size = self._memory.data_len(self._store)
            base = ctypes.addressof(self._memory.data_ptr(self._store).contents)
        else:
            size = self._size()
            known_size, base = self._known
            if size != known_size:
                base = self._data()
                self._known = (size, base)
        if offset <= 0 or offset + len(payload) > size:
            return False
        ctypes.memmove(base + offset, payload, len(payload))
        return True
