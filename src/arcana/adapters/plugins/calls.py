"""Calling an exported wasm function with as little Python overhead as possible.

``wasmtime.Func.__call__`` rebuilds the function type, converts every argument through ``Val``
and allocates fresh ctypes arrays on every call; for a two-``i32`` call that is most of the cost.
``FastCall`` keeps one pre-built argument/result array per function and calls the C API directly
through the package's own ctypes bindings. That binding module is private, so the fast path is
used only on the wasmtime-py major version it was written against (and checked by a self-test
at load); anything else takes ``Func.__call__``, which gives the same results.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
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
        from wasmtime import _ffi as ffi

        return all(
            hasattr(ffi, name)
            for name in ("wasmtime_func_call", "wasmtime_val_t", "wasm_trap_t", "WASMTIME_I32")
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
    """Same contract as ``SlowCall`` for functions whose params and results are all ``i32``."""

    __slots__ = ("_call", "_ctx", "_ffi", "_func_ref", "_nparams", "_nres", "_params", "_results")

    def __init__(self, store: wasmtime.Store, func: wasmtime.Func, nparams: int, nresults: int):
        from wasmtime import _ffi as ffi

        self._ffi = ffi
        self._ctx = store._context()
        self._func_ref = ctypes.byref(func._func)
        self._params = (ffi.wasmtime_val_t * max(nparams, 1))()
        for i in range(nparams):
            self._params[i].kind = ffi.WASMTIME_I32.value  # type: ignore[assignment]
        self._results = (ffi.wasmtime_val_t * max(nresults, 1))()
        self._nparams = nparams
        self._nres = nresults
        self._call = ffi.wasmtime_func_call

    def __call__(self, *args: int) -> Any:
        params = self._params
        for i, value in enumerate(args):
            params[i].of.i32 = value
        trap = ctypes.POINTER(self._ffi.wasm_trap_t)()
        error = self._call(
            self._ctx,
            self._func_ref,
            params,
            self._nparams,
            self._results,
            self._nres,
            ctypes.byref(trap),
        )
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        if trap:
            raise wasmtime.Trap._from_ptr(trap)
        if self._nres == 0:
            return None
        return int(self._results[0].of.i32)


def make_call(
    store: wasmtime.Store, func: wasmtime.Func, nparams: int, nresults: int, *, fast: bool
) -> SlowCall | FastCall:
    if fast and FAST_CALL_SUPPORTED:
        return FastCall(store, func, nparams, nresults)
    return SlowCall(store, func, nparams, nresults)
