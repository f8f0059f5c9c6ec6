"""What a plugin gets from WASI preview 1 beyond wasmtime's own implementation.

wasmtime's ``define_wasi`` links every preview 1 function with nothing granted (no preopened
directories, empty environment and arguments, real random). Three things are the host's own:

- ``clock_time_get``: the host's clocks, or a fixed clock the test suite passes in, so a
  plugin that reads the time gives the same answer on every run;
- ``poll_oneoff``: wasmtime's would sleep as long as the plugin asks, and neither fuel nor the
  epoch deadline interrupts a host call. Here a sleep ends at the call's deadline at the
  latest; the plugin then resumes and the epoch deadline stops it (``TIMED_OUT``);
- ``fd_write``: to stdout/stderr it goes to the instance's ``PluginOutput``, which the host
  logs under the plugin's name after each call, bounded; any other descriptor is EBADF (with
  nothing preopened, 0-2 are the only ones). ``WasiConfig.stdout_custom`` would do the same
  through wasmtime, but it delivers the bytes on a tokio worker thread that calls back into
  Python, and such a thread still calling back while the interpreter exits aborts the process.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable

import wasmtime

from arcana.adapters.plugins.loader import WASI_MODULE

Clock = Callable[[int], int]
"""Clock id (0 realtime, 1 monotonic, 2 process CPU, 3 thread CPU) -> nanoseconds."""

OUTPUT_LIMIT = 4096
"""Bytes of stdout + stderr kept per call; the rest is counted as dropped."""

ESUCCESS, EBADF, EFAULT, EINVAL = 0, 8, 21, 28
SUBSCRIPTION_SIZE, EVENT_SIZE = 48, 32
EVENTTYPE_CLOCK = 0
SUBCLOCKFLAG_ABSTIME = 1

_REAL_CLOCKS: dict[int, Callable[[], int]] = {
    0: time.time_ns,
    1: time.monotonic_ns,
    2: time.process_time_ns,
    3: time.thread_time_ns,
}

# The call running in this thread: its deadline (``time.monotonic`` seconds) and where its
# output goes, set when the call is armed. Host functions run in the calling thread.
_call = threading.local()


def set_deadline(at: float) -> None:
    _call.deadline = at


def set_output(output: PluginOutput) -> None:
    _call.output = output


def real_clock(clock_id: int) -> int:
    return _REAL_CLOCKS[clock_id]()


class PluginOutput:
    """stdout/stderr of one instance, kept for the call in progress (``OUTPUT_LIMIT`` bytes)."""

    __slots__ = ("chunks", "dropped", "kept")

    def __init__(self) -> None:
        self.chunks: list[tuple[str, bytes]] = []
        self.kept = 0
        self.dropped = 0

    @property
    def room(self) -> int:
        return OUTPUT_LIMIT - self.kept

    def add(self, stream: str, data: bytes, dropped: int = 0) -> None:
        """Keep ``data`` (at most ``room`` bytes of it); ``dropped`` more were not read."""
        part = data[: max(self.room, 0)]
        if part:
            self.chunks.append((stream, part))
            self.kept += len(part)
        self.dropped += len(data) - len(part) + dropped

    @property
    def pending(self) -> bool:
        return bool(self.chunks) or self.dropped > 0

    def take(self) -> tuple[list[tuple[str, str]], int]:
        """Per stream, what was written since the last ``take`` (decoded), and the bytes
        dropped; the buffer starts over."""
        streams: dict[str, bytearray] = {}
        for stream, data in self.chunks:
            streams.setdefault(stream, bytearray()).extend(data)
        dropped = self.dropped
        self.chunks, self.kept, self.dropped = [], 0, 0
        return [
            (stream, bytes(data).decode("utf-8", errors="replace").rstrip("\n"))
            for stream, data in streams.items()
        ], dropped


def wasi_config() -> wasmtime.WasiConfig:
    """Nothing granted: no preopened directories, environment, arguments or stdin (stdout and
    stderr are the host's ``fd_write``)."""
    return wasmtime.WasiConfig()


def define_host_wasi(linker: wasmtime.Linker, clock: Clock) -> None:
    """Define wasmtime's WASI, then shadow ``clock_time_get``, ``poll_oneoff`` and
    ``fd_write``."""
    linker.define_wasi()
    linker.allow_shadowing = True
    i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()

    def clock_time_get(caller: wasmtime.Caller, clock_id: int, _precision: int, out: int) -> int:
        if clock_id not in _REAL_CLOCKS:
            return EINVAL
        return _store(caller, out, struct.pack("<Q", clock(clock_id) & 0xFFFF_FFFF_FFFF_FFFF))

    def poll_oneoff(
        caller: wasmtime.Caller, subs_ptr: int, events_ptr: int, nsubs: int, nevents_ptr: int
    ) -> int:
        if nsubs <= 0:
            return EINVAL
        memory = caller.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            return EFAULT
        size = memory.data_len(caller)
        if subs_ptr < 0 or subs_ptr + nsubs * SUBSCRIPTION_SIZE > size:
            return EFAULT
        subs = bytes(memory.read(caller, subs_ptr, subs_ptr + nsubs * SUBSCRIPTION_SIZE))
        ready: list[bytes] = []
        timers: list[tuple[int, int]] = []
        for i in range(nsubs):
            base = i * SUBSCRIPTION_SIZE
            userdata, tag = struct.unpack_from("<QB", subs, base)
            if tag == EVENTTYPE_CLOCK:
                clock_id, timeout, _precision, flags = struct.unpack_from(
                    "<I4xQQH", subs, base + 16
                )
                if clock_id not in _REAL_CLOCKS:
                    ready.append(_event(userdata, EINVAL, tag))
                    continue
                if flags & SUBCLOCKFLAG_ABSTIME:
                    timeout -= clock(clock_id)
                timers.append((max(0, timeout), userdata))
            else:  # fd_read / fd_write: no descriptor a plugin could wait on exists
                ready.append(_event(userdata, EBADF, tag))
        if not ready and timers:
            wait_ns = min(t for t, _ in timers)
            remaining = getattr(_call, "deadline", 0.0) - time.monotonic()
            seconds = min(wait_ns / 1e9, remaining)
            if seconds > 0:
                time.sleep(seconds)
            ready = [_event(u, ESUCCESS, EVENTTYPE_CLOCK) for t, u in timers if t == wait_ns]
        if events_ptr < 0 or events_ptr + len(ready) * EVENT_SIZE > size:
            return EFAULT
        memory.write(caller, b"".join(ready), events_ptr)
        return _store(caller, nevents_ptr, struct.pack("<I", len(ready)))

    def fd_write(
        caller: wasmtime.Caller, fd: int, iovs_ptr: int, iovs_len: int, nwritten_ptr: int
    ) -> int:
        if fd not in (1, 2):
            return EBADF
        memory = caller.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            return EFAULT
        size = memory.data_len(caller)
        if iovs_len < 0 or iovs_ptr < 0 or iovs_ptr + iovs_len * 8 > size:
            return EFAULT
        iovs = bytes(memory.read(caller, iovs_ptr, iovs_ptr + iovs_len * 8))
        output: PluginOutput | None = getattr(_call, "output", None)
        room = output.room if output is not None else 0
        kept = bytearray()
        total = 0
        for i in range(iovs_len):
            buf, length = struct.unpack_from("<II", iovs, i * 8)
            if buf + length > size:
                return EFAULT
            take = min(length, max(room - len(kept), 0))
            if take:
                kept += memory.read(caller, buf, buf + take)
            total += length
        if output is not None:
            output.add("stdout" if fd == 1 else "stderr", bytes(kept), total - len(kept))
        return _store(caller, nwritten_ptr, struct.pack("<I", total & 0xFFFF_FFFF))

    linker.define_func(
        WASI_MODULE,
        "fd_write",
        wasmtime.FuncType([i32, i32, i32, i32], [i32]),
        fd_write,
        access_caller=True,
    )
    linker.define_func(
        WASI_MODULE,
        "clock_time_get",
        wasmtime.FuncType([i32, i64, i32], [i32]),
        clock_time_get,
        access_caller=True,
    )
    linker.define_func(
        WASI_MODULE,
        "poll_oneoff",
        wasmtime.FuncType([i32, i32, i32, i32], [i32]),
        poll_oneoff,
        access_caller=True,
    )
    linker.allow_shadowing = False


def _event(userdata: int, error: int, tag: int) -> bytes:
    return struct.pack("<QHB5xQH6x", userdata, error, tag, 0, 0)


def _store(caller: wasmtime.Caller, ptr: int, data: bytes) -> int:
    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory):
        return EFAULT
    if ptr < 0 or ptr + len(data) > memory.data_len(caller):
        return EFAULT
    memory.write(caller, data, ptr)
    return ESUCCESS
