"""Unary ``GetProduct`` over gRPC against the cached REST ``GET /products/{id}``, same run.

    make bench-grpc            # or: .venv/bin/python bench/grpc.py --rounds 3 --duration 5

One ``arcana serve`` process (embedded settings, HTTP and gRPC on) and, as the ceiling, a bare
``grpc.aio`` servicer (``bench/bare.py grpc``: the same product as a message built once, no
interceptors). With ``h2load`` installed (Debian's nghttp2-client) the main table drives both
gRPC servers and the cached REST route with it (64 calls in flight: 4 HTTP/2 connections x 16
streams; REST over 64 HTTP/1.1 connections), because the Python grpc.aio client saturates
before either server does: ``vs bare gRPC`` is the figure to watch, ``vs REST`` is for
information. Its ``loop CPU µs/call`` column is the CPU time of each server's event-loop thread
per call (from ``/proc``): on two cores shared with h2load that thread is what bounds a Python
gRPC server, and the column moves much less with the machine's load than calls/s do. The older
table (a Python asyncio client for both transports) follows it.

    .venv/bin/python bench/grpc.py --callgrind    # instructions per call (valgrind), any load
    make bench-grpc ARGS=--callgrind              # the same

``--callgrind`` counts instead of timing: each server (the bare servicer, then Arcana's
``GrpcServer`` on an embedded container, the product in its cache) runs in its own process under
``valgrind --tool=callgrind --instr-atstart=no``; after a warm-up ``h2load`` run the parent
switches instrumentation on (``SIGUSR1``), drives a fixed number of ``GetProduct`` calls with
``h2load`` (4 connections x 16 streams, as above) and switches it off (``SIGUSR2``). Every
thread of the server is counted. Two call counts per server, subtracted, leave the cost of one
call without the connection set-up and the signals; the count does not depend on how loaded the
machine is.

    .venv/bin/python bench/grpc.py --callgrind --cache-sim   # + cache misses, mispredictions

``--cache-sim`` adds valgrind's cache and branch simulation to the same runs, one count per
thread: for each server's event-loop thread (the main thread), instructions, L1 misses, misses
of an L2 of this machine's geometry (``/sys/devices/system/cpu/cpu0/cache/index2``) taken as
the last level, and branch mispredictions per call. Instructions alone do not show what a
larger working set per call costs; these do, still independent of the machine's load.

    .venv/bin/python bench/grpc.py --wakeups      # thread wake-ups and CPU time, any load

``--wakeups`` counts what callgrind does not see, on the processes the h2load table drives (the
real ``arcana serve`` with its HTTP server and background loops, and the bare servicer): for
each thread (named with ``py-spy dump``), its voluntary context switches (= wake-ups, among
them every GIL hand-over it waits for) per second while idle, then per call over two
``h2load`` call counts subtracted, and the process's CPU time per call (user + sys from
``/proc``; that one moves with the machine's load, the switch counts much less).

    .venv/bin/python bench/grpc.py --perf         # the event-loop thread's time, by library

``--perf`` says where each server's event-loop thread spends its time in a real run, which
callgrind (instructions, simulated caches) cannot: Linux ``perf record -e cpu-clock`` samples
that thread (and only it) while ``h2load`` drives a fixed number of calls, for each server in
turn, ``--rounds`` times. It prints the thread's time per call by shared library (the
interpreter, grpc's Cython, the kernel, …), the medians of the rounds side by side, and the
functions whose time per call differs most. Needs ``perf`` and ``h2load``; the times move with
the machine's load, so run it on a quiet machine.
"""

from __future__ import annotations

import loadgen as lg  # first: it takes this folder off sys.path (see bench/loadgen.py)

# isort: split
import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx


async def _grpc_load(
    target: str, product_id: str, seconds: float, concurrency: int
) -> dict[str, float]:
    import grpc

    from arcana.rpc.gen.arcana.product.v1 import product_pb2 as pb
    from arcana.rpc.gen.arcana.product.v1 import product_pb2_grpc as pb_grpc

    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.ProductServiceStub(channel)
        request = pb.GetProductRequest(id=product_id)
        await stub.GetProduct(request)
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    await stub.GetProduct(request, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {**lg.latency_summary(latencies, elapsed), "errors": errors}


def have_h2load() -> bool:
    return shutil.which("h2load") is not None


def run_h2load(
    lg: Any,
    url: str,
    seconds: float,
    *,
    clients: int,
    streams: int,
    data: Path | None = None,
    headers: tuple[str, ...] = (),
    h1: bool = False,
) -> Any:
    """One h2load run; throughput from its summary, p50/p99 from its per-request log."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "requests.log"
        cmd = ["h2load", "-t1", f"-c{clients}", f"-m{streams}", f"-D{int(max(1, seconds))}"]
        cmd += ["--warm-up-time=1", f"--log-file={log}"]
        if h1:
            cmd.append("--h1")
        if data is not None:
            cmd.append(f"--data={data}")
        for header in headers:
            cmd += ["-H", header]
        out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
        match = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
        rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    times = sorted(int(r[2]) / 1000 for r in rows)
    errors = sum(1 for r in rows if not r[1].startswith("2"))
    if errors:  # which statuses, so that a rare one can be told apart from a refusal
        statuses = collections.Counter(r[1] for r in rows if not r[1].startswith("2"))
        print(f"h2load {url}: {dict(statuses)} of {len(rows)} requests", file=sys.stderr)
    if not times:
        return lg.Result(0.0, 0.0, 0.0, errors)
    rps = float(match.group(1)) if match else 0.0
    return lg.Result(
        rps, times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))], errors
    )


def grpc_request_file(work: Path, product_id: str) -> Path:
    """A gRPC-framed ``GetProductRequest`` (flag byte, 4-byte length, message) for h2load."""
    from arcana.rpc.gen.arcana.product.v1 import product_pb2 as pb

    raw = pb.GetProductRequest(id=product_id).SerializeToString()
    path = work / "get_product.grpc"
    path.write_bytes(struct.pack(">BI", 0, len(raw)) + raw)
    return path


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bare gRPC servicer exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"bare gRPC servicer not listening on {port} within {timeout}s")


GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
GET_PRODUCT = "/arcana.product.v1.ProductService/GetProduct"


# -- instruction counts (--callgrind) ----------------------------------------------------------
_HELPER_C = """
#include <valgrind/callgrind.h>
void bench_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void bench_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
"""


async def _bare_server(port: int) -> tuple[Any, str, Any]:
    """The ceiling of the h2load table: ``bench/bare.py grpc``'s servicer."""
    import grpc

    from arcana.rpc.gen.arcana.product.v1 import product_pb2 as pb
    from arcana.rpc.gen.arcana.product.v1 import product_pb2_grpc as pb_grpc

    message = pb.ProductResponse(
        id="00000000-0000-4000-8000-000000000001",
        name="Bench",
        price=9.99,
        stock=100,
        status="active",
        created_at="2026-12-01T00:00:00Z",
        updated_at="2026-12-01T00:00:00Z",
    )
    calls = [0]

    class Bare(pb_grpc.ProductServiceServicer):  # type: ignore[misc]
        async def GetProduct(self, request: Any, context: Any) -> Any:
            calls[0] += 1
            return message

    server = grpc.aio.server()
    pb_grpc.add_ProductServiceServicer_to_server(Bare(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()

    async def close() -> str:
        await server.stop(0)
        return f"calls={calls[0]}"

    return server, message.id, close


async def _arcana_server(port: int, work: Path) -> tuple[Any, str, Any]:
    """``GrpcServer`` as ``arcana serve`` builds it, on an embedded container."""
    from decimal import Decimal

    from prometheus_client import REGISTRY

    import arcana.rpc.server as rpc_server
    from arcana.config import Settings
    from arcana.domain.products import NewProduct
    from arcana.lifecycle import Lifecycle
    from arcana.log import configure_logging

    # The health loop reads the database every 2 s: a cost per second, not per call.
    rpc_server.HEALTH_INTERVAL = 3600.0
    configure_logging("WARNING", json=True, env="test")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        database_url=f"sqlite+aiosqlite:///{work / 'arcana.db'}",
        var_dir=work / "var",
        jwt_secret=lg.SECRET,
        log_json=True,
        log_level="WARNING",
    )
    process = Lifecycle.build(settings)
    await process.start()
    product = await process.app.products.create(
        "bench", NewProduct(name="Bench", price=Decimal("9.99"), stock=100)
    )
    server = rpc_server.GrpcServer(process.app, "127.0.0.1", port)
    await server.start()

    async def close() -> str:
        await server.stop(0)
        await process.stop()
        ok = REGISTRY.get_sample_value(
            "arcana_grpc_requests_total", {"method": "GetProduct", "code": "OK"}
        )
        return f"calls={int(ok)}"

    return server, product.id, close


async def _counted_server(kind: str, port: int, helper: str) -> None:
    import ctypes
    import gc
    import signal

    lib = ctypes.CDLL(helper)
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "bare":
            _, product_id, close = await _bare_server(port)
        else:
            _, product_id, close = await _arcana_server(port, Path(tmp))
        done = asyncio.Event()

        def start() -> None:
            gc.collect()
            gc.freeze()
            lib.bench_start()
            print("counting", flush=True)

        def stop() -> None:
            lib.bench_stop()
            done.set()

        loop.add_signal_handler(signal.SIGUSR1, start)
        loop.add_signal_handler(signal.SIGUSR2, stop)
        print(f"ready {product_id}", flush=True)
        await done.wait()
        print(await close(), flush=True)


def _h2load_calls(port: int, body: Path, n: int) -> None:
    cmd = ["h2load", "-t1", "-c4", "-m16", f"-n{n}", f"--data={body}"]
    for header in GRPC_HEADERS:
        cmd += ["-H", header]
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}{GET_PRODUCT}"], capture_output=True, text=True
    ).stdout
    if f"{n} succeeded" not in out:
        raise SystemExit(f"h2load did not complete {n} calls:\n{out}")


# The events of ``--cache-sim``, as callgrind names them.
_EVENTS = (
    *("Ir", "Dr", "Dw"),
    *("I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw"),
    *("Bc", "Bcm", "Bi", "Bim"),
)


def _l2_geometry() -> str:
    """This machine's per-core L2 (size,ways,line) for valgrind's ``--LL``: what the event
    loop's thread misses there goes to the shared L3 or memory. valgrind otherwise simulates
    the last level (here a 32 MiB L3), where nearly nothing misses."""
    base = Path("/sys/devices/system/cpu/cpu0/cache/index2")
    try:
        size = (base / "size").read_text().strip()
        ways = int((base / "ways_of_associativity").read_text())
        line = int((base / "coherency_line_size").read_text())
    except (OSError, ValueError):
        return "1048576,16,64"
    factor = {"K": 1024, "M": 1024 * 1024}.get(size[-1], 1)
    return f"{int(size.rstrip('KM')) * factor},{ways},{line}"


def _totals(path: Path) -> list[int]:
    for text in path.read_text().splitlines():
        if text.startswith("totals:"):
            return [int(x) for x in text.split()[1:]]
    raise SystemExit(f"no totals in {path}")


def _instructions(kind: str, n: int, helper: str, work: Path, cache_sim: bool) -> dict[str, int]:
    """What the server executed while ``n`` calls were driven: ``{"Ir": instructions}`` of all
    threads; with ``cache_sim``, the event-loop thread's events (``_EVENTS``: the simulated L1
    and this machine's L2 as the last level) and all threads' instructions as ``"all Ir"``.
    valgrind has been seen to abort on the stop signal now and then: one more try."""
    for attempt in (1, 2):
        try:
            return _counted(kind, n, helper, work, cache_sim)
        except SystemExit:
            if attempt == 2:
                raise
            print(f"{kind}, {n} calls: counting failed, once more", file=sys.stderr)
    raise AssertionError("unreachable")


def _counted(kind: str, n: int, helper: str, work: Path, cache_sim: bool) -> dict[str, int]:
    import signal

    port = lg.free_port()
    out = work / f"callgrind.{kind}.{n}"
    for stale in [out, *work.glob(f"{out.name}-*")]:  # a failed try's files, one per thread
        stale.unlink(missing_ok=True)
    cmd = ["valgrind", "-q", "--tool=callgrind", "--instr-atstart=no"]
    cmd += [f"--callgrind-out-file={out}"]
    if cache_sim:
        cmd += ["--cache-sim=yes", "--branch-sim=yes", "--separate-threads=yes"]
        cmd += [f"--LL={_l2_geometry()}"]
    cmd += [sys.executable, __file__, "--callgrind-server", kind, str(port), helper]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        if not line.startswith("ready "):
            raise SystemExit(f"{kind} server did not start: {line!r}")
        body = grpc_request_file(work, line.split()[1])
        _h2load_calls(port, body, 500)  # warm-up: caches, code paths, connections
        proc.send_signal(signal.SIGUSR1)
        if proc.stdout.readline().strip() != "counting":
            raise SystemExit(f"{kind} server did not start counting")
        _h2load_calls(port, body, n)
        proc.send_signal(signal.SIGUSR2)
        calls = proc.stdout.read().strip()
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    if calls != f"calls={500 + n}":
        raise SystemExit(f"{kind} server answered {calls!r} OK, expected {500 + n}")
    if not cache_sim:
        return {"Ir": _totals(out)[0]}
    # One file per thread (``-01`` is the main thread, which runs the event loop).
    events = dict(zip(_EVENTS, _totals(work / f"{out.name}-01"), strict=True))
    events["all Ir"] = sum(_totals(p)[0] for p in work.glob(f"{out.name}-*"))
    return events


def _per_call(
    small: int, large: int, keep: Path | None, cache_sim: bool
) -> dict[str, dict[str, float]]:
    """Each server's counts per call: two runs (``small`` and ``large`` calls) subtracted."""
    if not have_h2load() or shutil.which("valgrind") is None:
        raise SystemExit("--callgrind needs h2load and valgrind")
    per_call: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        source, helper = work / "cg.c", work / "libbenchcg.so"
        source.write_text(_HELPER_C)
        cc = os.environ.get("CC", "cc")
        subprocess.run([cc, "-O1", "-shared", "-fPIC", "-o", str(helper), str(source)], check=True)
        for kind in ("bare", "arcana"):
            few = _instructions(kind, small, str(helper), work, cache_sim)
            many = _instructions(kind, large, str(helper), work, cache_sim)
            per_call[kind] = {k: (many[k] - few[k]) / (large - small) for k in many}
            total = "all Ir" if cache_sim else "Ir"
            print(
                f"{kind}: {few[total]:,} instructions for {small} calls, "
                f"{many[total]:,} for {large}"
            )
    return per_call


def callgrind(small: int, large: int, keep: Path | None) -> None:
    per_call = _per_call(small, large, keep, cache_sim=False)
    bare, arcana = per_call["bare"]["Ir"], per_call["arcana"]["Ir"]
    print(f"\ninstructions per GetProduct call (server, all threads; {large} - {small} calls)")
    print("| server | instructions/call | vs bare gRPC |")
    print("|---|---:|---:|")
    print(f"| bare grpc.aio servicer (memory) | {bare:,.0f} | 1.00 |")
    print(f"| gRPC GetProduct cached | {arcana:,.0f} | {arcana / bare:.2f} |")


def cache_sim(small: int, large: int, keep: Path | None) -> None:
    """``--callgrind --cache-sim``: per call, the event-loop thread's instructions, simulated
    L1 and L2 misses and branch mispredictions, for both servers."""
    per_call = _per_call(small, large, keep, cache_sim=True)
    print(
        f"\nper GetProduct call ({large} - {small} calls), event-loop thread; caches simulated "
        f"(L1 as valgrind finds it, L2 {_l2_geometry()} = size,ways,line as last level)"
    )
    rows = (
        ("instructions", ("Ir",)),
        ("L1 misses (instruction + data)", ("I1mr", "D1mr", "D1mw")),
        ("L2 misses, instruction", ("ILmr",)),
        ("L2 misses, data", ("DLmr", "DLmw")),
        ("branch mispredictions", ("Bcm", "Bim")),
        ("instructions, all threads", ("all Ir",)),
    )
    print("| per call | bare grpc.aio servicer | gRPC GetProduct cached | vs bare gRPC |")
    print("|---|---:|---:|---:|")
    for label, keys in rows:
        bare = sum(per_call["bare"][k] for k in keys)
        arcana = sum(per_call["arcana"][k] for k in keys)
        print(f"| {label} | {bare:,.0f} | {arcana:,.0f} | {arcana / bare:.2f} |")


# -- thread wake-ups and CPU time (--wakeups) -------------------------------------------------
_HZ = os.sysconf("SC_CLK_TCK")


def _loop_cpu(pid: int) -> float:
    """CPU seconds (user + sys) of a process's main thread: the event loop's, in both servers."""
    stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / _HZ


def _thread_names(pid: int) -> dict[str, str]:
    """Thread id → Python thread name (``py-spy dump``), else the kernel's ``comm``."""
    names = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            names[tid] = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True)
        for m in re.finditer(r'^Thread (\d+) \(\w+\): "([^"]+)"', out.stdout, re.M):
            names[m.group(1)] = m.group(2)
    return names


def _switches(pid: int) -> tuple[float, dict[str, int]]:
    """Process CPU seconds (user + sys, all threads) and each thread's voluntary switches."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    per: dict[str, int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    per[tid] = int(line.split()[1])
    return (int(stat[11]) + int(stat[12])) / _HZ, per


def _delta(
    before: tuple[float, dict[str, int]], after: tuple[float, dict[str, int]]
) -> tuple[float, dict[str, int]]:
    return after[0] - before[0], {t: n - before[1].get(t, 0) for t, n in after[1].items()}


def _by_name(per: dict[str, int], names: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for tid, n in per.items():
        name = re.sub(r"_\d+$|-\d+$", "", names.get(tid, "?"))
        name = re.sub(r"^Thread-\d+ \((\w+)\)$", r"\1", name)
        out[name] = out.get(name, 0) + n
    return out


def wakeups(pid: int, port: int, body: Path, few: int, many: int, rounds: int) -> None:
    """Idle wake-ups per second, then wake-ups and CPU per call of one server process."""
    names = _thread_names(pid)
    idle = 10.0
    before = _switches(pid)
    time.sleep(idle)
    idle_cpu, idle_per = _delta(before, _switches(pid))
    _h2load_calls(port, body, 500)  # warm-up
    cpu: list[float] = []
    calls: dict[str, list[float]] = {}
    for _ in range(rounds):
        counted = []
        for n in (few, many):
            before = _switches(pid)
            _h2load_calls(port, body, n)
            counted.append(_delta(before, _switches(pid)))
        (c_few, s_few), (c_many, s_many) = counted
        cpu.append((c_many - c_few) / (many - few) * 1e6)
        diff = {t: s_many.get(t, 0) - s_few.get(t, 0) for t in s_many}
        for name, n in _by_name(diff, names).items():
            calls.setdefault(name, []).append(n / (many - few))
    idle_named = _by_name(idle_per, names)
    print(
        f"idle: {idle_cpu / idle * 1000:.1f} ms CPU/s; per call ({many} - {few} calls, median of "
        f"{rounds}): {sorted(cpu)[len(cpu) // 2]:.0f} us CPU (user + sys, moves with load)"
    )
    print("| thread | wake-ups/s idle | wake-ups/call |")
    print("|---|---:|---:|")
    for name in sorted(set(idle_named) | set(calls), key=lambda k: -idle_named.get(k, 0)):
        per_call = sorted(calls.get(name, [0.0]))
        median = per_call[len(per_call) // 2]
        print(f"| {name} | {idle_named.get(name, 0) / idle:.1f} | {median:.2f} |")


@contextlib.contextmanager
def _serving() -> Iterator[tuple[Path, str, str, int, list[subprocess.Popen[bytes]]]]:
    """``arcana serve`` (embedded, 1,000 demo products, HTTP and gRPC) with the first product
    in its cache and its JSON in ``product.json``: (work dir, base URL, product id, gRPC port,
    the processes to stop)."""
    work = Path(tempfile.mkdtemp(prefix="arcana-bench-grpc-"))
    http_port, grpc_port = lg.free_port(), lg.free_port()
    env = lg.arcana_env(work, http_port, grpc_port=grpc_port)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        lg.demo_data(env, work, 1000)
        base = lg.start_serve(env, work, procs)
        pid = lg.first_product_id(base)
        (work / "product.json").write_bytes(httpx.get(f"{base}/api/v1/products/{pid}").content)
        yield work, base, pid, grpc_port, procs
    finally:
        lg.stop_processes(procs, timeout=20)
        shutil.rmtree(work, ignore_errors=True)


def _start_bare(work: Path, procs: list[subprocess.Popen[bytes]]) -> tuple[Any, int]:
    """``bench/bare.py grpc`` serving ``product.json``, listening: (process, port)."""
    port = lg.free_port()
    cmd = [sys.executable, str(lg.HERE / "bare.py"), "grpc", str(port), str(work / "product.json")]
    proc = subprocess.Popen(cmd)
    procs.append(proc)
    _wait_port(port, proc)
    return proc, port


def wakeups_main(few: int, many: int, rounds: int) -> None:
    """``--wakeups``: ``arcana serve`` as the h2load table starts it, and the bare servicer."""
    if not have_h2load():
        raise SystemExit("--wakeups needs h2load")
    with _serving() as (work, _base, pid, grpc_port, procs):
        bare, bare_port = _start_bare(work, procs)
        body = grpc_request_file(work, pid)
        for title, proc, port in (
            ("bare grpc.aio servicer (memory)", bare, bare_port),
            ("gRPC GetProduct cached (arcana serve)", procs[0], grpc_port),
        ):
            print(f"\n{title}")
            wakeups(proc.pid, port, body, few, many, rounds)


# -- the event-loop thread's time by library (--perf) -----------------------------------------
def _perf_profile(pid: int, port: int, body: Path, calls: int, work: Path) -> Path:
    """``perf record`` of ``pid``'s main thread (the event loop) over ``calls`` h2load calls."""
    out = work / f"perf.{pid}.{time.monotonic_ns()}.data"
    cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "4999", "-t", str(pid)]
    rec = subprocess.Popen([*cmd, "-o", str(out)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not out.exists() or out.stat().st_size == 0:  # perf writes its header once it samples
        if rec.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("perf record did not start (perf_event_paranoid? perf installed?)")
        time.sleep(0.05)
    _h2load_calls(port, body, calls)
    rec.send_signal(signal.SIGINT)
    rec.wait(30)
    return out


def _perf_per_call(data: Path, calls: int, sort: str) -> dict[str, float]:
    """µs per call of each ``sort`` key (``dso`` or ``dso,sym``) in a ``perf record`` file."""
    out = subprocess.run(
        ["perf", "report", "-i", str(data), "--sort", sort, "--stdio"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    total = re.search(r"Event count \(approx\.\): (\d+)", out)  # cpu-clock: nanoseconds
    if total is None:
        return {}
    per: dict[str, float] = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.+?)\s*$", line)
        if m and not line.startswith("#"):
            key = re.sub(r"\s+", " ", m.group(2))
            per[key] = per.get(key, 0.0) + float(m.group(1)) / 100 * int(total.group(1))
    return {k: ns / calls / 1000 for k, ns in per.items()}


def _median_by_key(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = set().union(*runs)
    return {k: sorted(r.get(k, 0.0) for r in runs)[len(runs) // 2] for k in keys}


def perf_main(calls: int, rounds: int) -> None:
    """``--perf``: the bare servicer's and ``arcana serve``'s event-loop threads, by library."""
    if not have_h2load() or shutil.which("perf") is None:
        raise SystemExit("--perf needs h2load and perf")
    with _serving() as (work, _base, pid, grpc_port, procs):
        bare, bare_port = _start_bare(work, procs)
        body = grpc_request_file(work, pid)
        servers = {"bare": (bare.pid, bare_port), "arcana": (procs[0].pid, grpc_port)}
        by_dso: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
        by_sym: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
        for _ in range(rounds):
            for name, (server, port) in servers.items():
                _h2load_calls(port, body, 2000)  # warm-up
                data = _perf_profile(server, port, body, calls, work)
                by_dso[name].append(_perf_per_call(data, calls, "dso"))
                by_sym[name].append(_perf_per_call(data, calls, "dso,sym"))
                data.unlink()
    dso = {name: _median_by_key(runs) for name, runs in by_dso.items()}
    sym = {name: _median_by_key(runs) for name, runs in by_sym.items()}
    print(
        f"\nevent-loop thread, µs per GetProduct call by library ({calls:,} calls per round, "
        f"median of {rounds}; perf cpu-clock samples)"
    )
    print("| library | bare grpc.aio servicer | gRPC GetProduct cached | difference |")
    print("|---|---:|---:|---:|")
    keys = sorted(set(dso["bare"]) | set(dso["arcana"]), key=lambda k: -dso["arcana"].get(k, 0))
    for k in keys:
        b, a = dso["bare"].get(k, 0.0), dso["arcana"].get(k, 0.0)
        if max(a, b) >= 0.5:
            print(f"| {k} | {b:.1f} | {a:.1f} | {a - b:+.1f} |")
    b_all, a_all = sum(dso["bare"].values()), sum(dso["arcana"].values())
    print(f"| all | {b_all:.1f} | {a_all:.1f} | {a_all - b_all:+.1f} |")
    diffs = sorted(
        set(sym["bare"]) | set(sym["arcana"]),
        key=lambda k: -(sym["arcana"].get(k, 0.0) - sym["bare"].get(k, 0.0)),
    )
    print("\nfunctions whose time per call differs most (µs, bare / Arcana)")
    for k in diffs[:12]:
        b, a = sym["bare"].get(k, 0.0), sym["arcana"].get(k, 0.0)
        print(f"  {a - b:+6.2f}  {b:6.2f} / {a:6.2f}  {k[:90]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--callgrind", action="store_true", help="instructions per call instead")
    ap.add_argument("--calls", type=int, nargs=2, default=(500, 2500), metavar=("FEW", "MANY"))
    ap.add_argument("--keep", type=Path, help="with --callgrind: keep the callgrind files here")
    ap.add_argument(
        "--cache-sim",
        action="store_true",
        help="with --callgrind: the event-loop thread's simulated cache misses and branch "
        "mispredictions per call",
    )
    ap.add_argument("--wakeups", action="store_true", help="thread wake-ups and CPU per call")
    ap.add_argument(
        "--perf", action="store_true", help="the event-loop thread's time per call, by library"
    )
    args = ap.parse_args()
    if args.wakeups:
        wakeups_main(2000, 8000, args.rounds)
        return
    if args.perf:
        perf_main(40_000, args.rounds)
        return
    if args.callgrind:
        (cache_sim if args.cache_sim else callgrind)(*args.calls, args.keep)
        return
    with _serving() as (work, base, pid, grpc_port, procs):
        url = f"{base}/api/v1/products/{pid}"
        if have_h2load():
            bare, bare_port = _start_bare(work, procs)
            h2: dict[str, list[Any]] = {
                "bare grpc.aio servicer (memory)": [],
                "gRPC GetProduct cached": [],
                "REST GET /products/{id} cached": [],
            }
            body = grpc_request_file(work, pid)
            streams = max(1, args.connections // 4)
            grpc_kw: dict[str, Any] = {
                "clients": 4,
                "streams": streams,
                "data": body,
                "headers": GRPC_HEADERS,
            }
            serving = procs[0].pid
            targets = {
                "bare grpc.aio servicer (memory)": (
                    bare.pid,
                    f"http://127.0.0.1:{bare_port}{GET_PRODUCT}",
                    grpc_kw,
                ),
                "gRPC GetProduct cached": (
                    serving,
                    f"http://127.0.0.1:{grpc_port}{GET_PRODUCT}",
                    grpc_kw,
                ),
                "REST GET /products/{id} cached": (
                    serving,
                    url,
                    {"clients": args.connections, "streams": 1, "h1": True},
                ),
            }
            loop_us: dict[str, list[float]] = {name: [] for name in h2}
            for _ in range(args.rounds):
                for name, (server_pid, target, kw) in targets.items():
                    before = _loop_cpu(server_pid)
                    result = run_h2load(lg, target, args.duration, **kw)
                    h2[name].append(result)
                    # h2load's rate covers the measured seconds; the CPU also covers its 1 s
                    # warm-up, taken to run at the same rate.
                    calls = result.rps * (args.duration + 1)
                    loop_us[name].append((_loop_cpu(server_pid) - before) / calls * 1e6)
            bare.terminate()
            bare.wait(10)
            hm = {k: lg.median_result(v) for k, v in h2.items()}
            ceiling = hm["bare grpc.aio servicer (memory)"].rps
            rest = hm["REST GET /products/{id} cached"].rps
            print(
                f"\nh2load, {args.connections} in flight, {args.rounds} rounds x "
                f"{args.duration}s, medians"
            )
            print(
                "| scenario | req/s | p50 ms | p99 ms | vs bare gRPC | vs REST | errors "
                "| loop CPU µs/call |"
            )
            ceiling, rest = ceiling or float("nan"), rest or float("nan")
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
            for name, r in hm.items():
                cpu = sorted(loop_us[name])[len(loop_us[name]) // 2]
                print(
                    f"| {name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                    f"{r.rps / ceiling:.2f} | {r.rps / rest:.2f} | {r.errors} | {cpu:.1f} |"
                )
            print(
                "loop CPU: user + sys time of the server's event-loop thread per call (median "
                "of rounds); steadier than req/s on a shared machine, and where a server's own "
                "per-call work shows"
            )
        else:
            print("h2load not installed: only the Python-client table", file=sys.stderr)
        spec = json.dumps([f"127.0.0.1:{grpc_port}", pid, args.duration, args.connections])
        results: dict[str, list[object]] = {
            "gRPC GetProduct (python client)": [],
            "REST GET cached (python client)": [],
        }
        if lg.have_wrk():
            results["REST GET cached (wrk)"] = []
        for _ in range(args.rounds):
            out = subprocess.run(
                [sys.executable, __file__, "--grpc-load", spec],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            d = json.loads(out)
            results["gRPC GetProduct (python client)"].append(
                lg.Result(d["rps"], d["p50_ms"], d["p99_ms"], int(d["errors"]))
            )
            results["REST GET cached (python client)"].append(
                lg.run_python(url, args.duration, args.connections)
            )
            if lg.have_wrk():
                results["REST GET cached (wrk)"].append(
                    lg.run_wrk(url, args.duration, args.connections, None)
                )
        med = {k: lg.median_result(v) for k, v in results.items()}
        ref = med["REST GET cached (python client)"].rps
        print(
            f"\nPython clients, {args.connections} in flight, {args.rounds} rounds x "
            f"{args.duration}s, medians"
        )
        print("| scenario | req/s | p50 ms | p99 ms | vs REST (same client) | errors |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, r in med.items():
            print(
                f"| {name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                f"{r.rps / ref:.2f} | {r.errors} |"
            )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--callgrind-server":
        import uvloop

        uvloop.run(_counted_server(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    elif len(sys.argv) == 3 and sys.argv[1] == "--grpc-load":
        target, product_id, seconds, conc = json.loads(sys.argv[2])
        print(json.dumps(asyncio.run(_grpc_load(target, product_id, seconds, conc))))
    else:
        main()
