# ruff: noqa: E402  (sys.path is cleaned before the imports)
"""Cost of tracing: off, on at 100 % sampling and on at 1 % sampling.

    .venv/bin/python bench/tracing.py                  # 10 s per measurement
    .venv/bin/python bench/tracing.py --duration 1     # a quick check that it runs
    .venv/bin/python bench/tracing.py --callgrind      # instructions per operation (valgrind)

Two workloads, each in-process on an embedded container (SQLite file, in-process cache), so
the numbers isolate what tracing adds to our code:

- the cached product read: ``GET /api/v1/products/{id}`` through the whole ASGI stack
  (middleware span, route, cache hit), one request at a time;
- job throughput: no-op jobs enqueued in batches of 500 (inside a span, so every job carries a
  trace context) and run by one worker (concurrency 16) over the SQL queue.

Tracing "on" is the real SDK set-up (``ParentBased`` sampler, ``BatchSpanProcessor``) with an
exporter that drops the spans, so the export's network cost is left out (it runs in the batch
processor's thread either way). Target: at 1 % sampling within 5 % of off; off is the
baseline (the hooks cost one flag test).

``--callgrind`` counts instructions instead of timing them: each configuration runs in its own
process under ``valgrind --tool=callgrind --instr-atstart=no``, with instrumentation switched
on only around a fixed amount of work (``CALLGRIND_START_INSTRUMENTATION`` /
``CALLGRIND_STOP_INSTRUMENTATION`` through a four-line C helper built with ``cc``), so set-up
and warm-up are not counted and the count does not depend on how loaded the machine is. Every
thread is counted (SQLite's and the span processor's export thread included). The job workload
then measures the worker's side only: the jobs are enqueued during set-up, each from its own
span as a request would, and the counted part fetches them in batches of 32, runs each through
``Worker._run`` (metrics, span, handler) and acknowledges them, without the worker's
timer-driven side loops (reaper, heartbeats), whose count would follow the run's duration.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import gc
import os
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx

from arcana import tracing
from arcana.api.app import create_app
from arcana.config import Settings
from arcana.domain.jobs import JobRequest
from arcana.domain.products import NewProduct
from arcana.lifecycle import Lifecycle
from arcana.worker.jobs import build_registry
from arcana.worker.runner import Worker

MODES = ("off", "100%", "1%")


def set_mode(mode: str, *, timer: bool = True) -> tuple[Any, Any]:
    """Install tracing for ``mode``; returns (provider, exporter), both ``None`` when off.

    The SDK is imported only for the "on" modes: a process with tracing off never loads it,
    as in production without an endpoint. ``timer=False`` leaves out the batch processor's
    export every 5 s (it then exports when a batch is full, and on ``force_flush``): a cost
    per second, not per operation, whose count would follow how long the run takes."""
    tracing.reset_for_tests()
    if mode == "off":
        return None, None
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

    class DropExporter(SpanExporter):
        def __init__(self) -> None:
            self.spans = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    ratio = {"100%": 1.0, "1%": 0.01}[mode]
    sampler = ParentBased(ALWAYS_ON if ratio == 1.0 else TraceIdRatioBased(ratio))
    exporter = DropExporter()
    provider = TracerProvider(sampler=sampler)
    delay = 5000 if timer else 3_600_000
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=65536, schedule_delay_millis=delay)
    )
    tracing.set_tracer_for_tests(provider)
    return provider, exporter


async def process_in(folder: Path) -> Lifecycle:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        database_url=f"sqlite+aiosqlite:///{folder / 'arcana.db'}",
        var_dir=folder / "var",
        jwt_secret="bench-secret-" + "x" * 40,
        log_json=True,
        log_level="WARNING",
    )
    process = Lifecycle.build(settings)
    await process.start()
    return process


async def product_reads(folder: Path, duration: float) -> float:
    process = await process_in(folder)
    c = process.app
    try:
        p = await c.products.create(
            "bench", NewProduct(name="Bench", price=Decimal("9.99"), stock=100)
        )
        app = create_app(c)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            url = f"/api/v1/products/{p.id}"
            for _ in range(200):  # warm the cache and the code paths
                assert (await http.get(url)).status_code == 200
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < duration:
                for _ in range(50):
                    await http.get(url)
                n += 50
            return n / (time.perf_counter() - t0)
    finally:
        await process.stop()


async def job_throughput(folder: Path, duration: float) -> float:
    process = await process_in(folder)
    c = process.app
    try:
        worker = Worker(c.queue, build_registry(c), concurrency=16, batch_size=32)
        stop = asyncio.Event()
        runner = asyncio.create_task(worker.run(stop))
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < duration:
            with tracing.span("bench.enqueue"):
                await c.queue.enqueue_many([JobRequest("system.noop")] * 500)
            done += 500
            while (await c.queue.stats()).depth.get("NORMAL", 0) > 100:
                await asyncio.sleep(0.005)
        while sum((await c.queue.stats()).depth.values()) or (await c.queue.stats()).running:
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - t0
        stop.set()
        await runner
        return done / elapsed
    finally:
        await process.stop()


async def timed(args: argparse.Namespace) -> None:
    modes = list(MODES)
    results: dict[str, dict[str, list[float]]] = {
        w: {m: [] for m in modes} for w in ("read", "jobs")
    }
    spans: dict[str, int] = dict.fromkeys(modes, 0)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for mode in modes:  # interleaved, so machine noise hits every mode alike
                for workload, fn in (("read", product_reads), ("jobs", job_throughput)):
                    provider, exporter = set_mode(mode)
                    folder = Path(tmp) / f"{r}-{mode.strip('%')}-{workload}"
                    folder.mkdir()
                    results[workload][mode].append(await fn(folder, args.duration))
                    if provider is not None and exporter is not None:
                        provider.force_flush()
                        spans[mode] += exporter.spans
                        provider.shutdown()
    tracing.reset_for_tests()
    print(f"{'workload':<28}{'mode':<7}{'ops/s (median)':>16}{'vs off':>9}")
    for workload, label in (("read", "cached product read"), ("jobs", "job throughput (noop)")):
        base = statistics.median(results[workload]["off"])
        for mode in modes:
            value = statistics.median(results[workload][mode])
            delta = (value / base - 1) * 100
            print(f"{label:<28}{mode:<7}{value:>16.0f}{delta:>+8.1f}%")
    print("spans exported: " + ", ".join(f"{m}: {n}" for m, n in spans.items()))


# -- instruction counts (--callgrind) ----------------------------------------------------------
_HELPER_C = """
#include <valgrind/callgrind.h>
void bench_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void bench_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
"""
WORKLOADS = {"read": "cached product read", "jobs": "job (noop, worker side)", "hooks": ""}


class Counted:
    """Instrumentation switched on for the ``with`` block only (a no-op outside valgrind)."""

    def __init__(self, helper: str) -> None:
        import ctypes

        self._lib = ctypes.CDLL(helper)

    def __enter__(self) -> None:
        random.seed(1)  # the counted part draws the same trace ids whatever set-up drew
        # Set-up's objects out of the collector's way: a full collection over them, landing
        # inside or outside the counted part as thread timing has it, would be noise.
        gc.collect()
        gc.freeze()
        self._lib.bench_start()

    def __exit__(self, *exc: object) -> None:
        self._lib.bench_stop()


async def counted_reads(folder: Path, n: int, counted: Counted, provider: Any) -> None:
    process = await process_in(folder)
    c = process.app
    try:
        p = await c.products.create(
            "bench", NewProduct(name="Bench", price=Decimal("9.99"), stock=100)
        )
        transport = httpx.ASGITransport(app=create_app(c))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            url = f"/api/v1/products/{p.id}"
            for _ in range(200):  # warm the cache and the code paths
                assert (await http.get(url)).status_code == 200
            with counted:
                for _ in range(n):
                    await http.get(url)
                if provider is not None:
                    provider.force_flush()  # the export of these requests' spans is counted
    finally:
        await process.stop()


async def counted_jobs(folder: Path, n: int, counted: Counted, provider: Any) -> None:
    process = await process_in(folder)
    c = process.app
    try:
        worker = Worker(c.queue, build_registry(c), concurrency=32, batch_size=32)

        async def enqueue(count: int) -> None:
            for _ in range(count):  # each from its own trace, as requests enqueue them
                with tracing.span("bench.enqueue"):
                    await c.queue.enqueue(JobRequest("system.noop"))

        async def work_off() -> int:
            done = 0
            while jobs := await c.queue.fetch(worker.worker_id, 32, 3600.0):
                # What the worker does per job (Worker._run: metrics, span, handler, ack
                # list), without its timer-driven side loops.
                await asyncio.gather(*(worker._run(job) for job in jobs))
                await worker._flush_acks()
                done += len(jobs)
            return done

        await enqueue(64)  # warm the code paths
        await work_off()
        await enqueue(n)
        if provider is not None:
            provider.force_flush()  # the enqueueing spans are set-up, not counted
        with counted:
            done = await work_off()
            if provider is not None:
                provider.force_flush()
        assert done == n, (done, n)
    finally:
        await process.stop()


def counted_hooks(n: int, counted: Counted) -> None:
    """What tracing off leaves on the hot paths, ``n`` times: the HTTP middleware's flag test
    and null context (the code of ``TimingMiddleware``, per request) and the worker's flag test
    (per job). An upper bound of what "off" costs against no tracing code at all."""
    cm: Any
    with counted:
        for _ in range(n):
            cm = tracing.span("HTTP GET", kind="server") if tracing.ENABLED else tracing.NULL_SPAN
            current = cm.__enter__()
            if current is not None and not current.is_recording():
                current = None
            if current is not None:
                tracing.set_attributes(current, {})
            if current is not None:
                tracing.set_error(current, "")
            cm.__exit__(None, None, None)
            if tracing.ENABLED:
                pass


def callgrind_child(mode: str, workload: str, n: int, helper: str) -> None:
    random.seed(0)  # trace ids, hence 1 % sampling decisions, are the same in every run
    provider, exporter = set_mode(mode, timer=False)
    counted = Counted(helper)
    if workload == "hooks":
        counted_hooks(n, counted)
        return
    fn = counted_reads if workload == "read" else counted_jobs
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(fn(Path(tmp), n, counted, provider))
    spans = exporter.spans if exporter is not None else 0
    if provider is not None:
        provider.shutdown()
    print(f"spans={spans}")


def build_helper(folder: Path) -> str:
    source, lib = folder / "cg.c", folder / "libbenchcg.so"
    source.write_text(_HELPER_C)
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O1", "-shared", "-fPIC", "-o", str(lib), str(source)], check=True)
    return str(lib)


def instructions(mode: str, workload: str, n: int, helper: str, folder: Path) -> tuple[int, int]:
    """(instructions counted, spans exported) of one run under callgrind."""
    out = folder / f"callgrind.{workload}.{mode.strip('%')}.{n}.{time.monotonic_ns()}"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        __file__,
        "--callgrind-child",
        mode,
        workload,
        str(n),
        helper,
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    spans = int(proc.stdout.rsplit("spans=", 1)[1].split()[0]) if "spans=" in proc.stdout else 0
    for line in out.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1]), spans
    raise SystemExit(f"no totals in {out}")


def callgrind(args: argparse.Namespace) -> None:
    sizes = {"read": args.requests, "jobs": args.jobs}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        helper = build_helper(folder)
        runs = [(w, m) for _ in range(args.repeat) for w in sizes for m in MODES]
        # Counts do not depend on load, so the runs may share the machine.
        with ThreadPoolExecutor(args.parallel) as pool:
            hooks_run = pool.submit(instructions, "off", "hooks", 10_000, helper, folder)
            futures = [
                (key, pool.submit(instructions, key[1], key[0], sizes[key[0]], helper, folder))
                for key in runs
            ]
            rows: dict[tuple[str, str], list[tuple[int, int]]] = {}
            for key, future in futures:
                rows.setdefault(key, []).append(future.result())
            hooks, _ = hooks_run.result()
    print(f"instructions per operation (callgrind), {args.repeat} run(s) per configuration")
    print(
        f"{'workload':<26}{'mode':<6}{'n':>6}{'instr/op':>12}{'vs off':>9}{'spread':>8}{'spans':>8}"
    )
    for workload, n in sizes.items():
        base = sum(t for t, _ in rows[(workload, "off")]) / args.repeat / n
        for mode in MODES:
            totals = [t for t, _ in rows[(workload, mode)]]
            per_op = sum(totals) / len(totals) / n
            spread = (max(totals) - min(totals)) / min(totals) * 100
            spans = rows[(workload, mode)][0][1]
            print(
                f"{WORKLOADS[workload]:<26}{mode:<6}{n:>6}{per_op:>12,.0f}"
                f"{(per_op / base - 1) * 100:>+8.2f}%{spread:>7.2f}%{spans:>8}"
            )
    read_off = sum(t for t, _ in rows[("read", "off")]) / args.repeat / args.requests
    per_hook = hooks / 10_000
    print(
        f"tracing-off hooks: {per_hook:,.0f} instructions per request and job "
        f"({per_hook / read_off * 100:.3f} % of a cached read)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per mode (median is shown)")
    ap.add_argument(
        "--callgrind", action="store_true", help="count instructions under valgrind instead"
    )
    ap.add_argument("--requests", type=int, default=1000, help="--callgrind: requests per run")
    ap.add_argument("--jobs", type=int, default=500, help="--callgrind: jobs per run")
    ap.add_argument("--repeat", type=int, default=2, help="--callgrind: runs per configuration")
    ap.add_argument("--keep", help="--callgrind: keep the callgrind.* files in this folder")
    ap.add_argument("--parallel", type=int, default=2, help="--callgrind: runs at once")
    ap.add_argument("--callgrind-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.callgrind_child:
        mode, workload, n, helper = args.callgrind_child
        callgrind_child(mode, workload, int(n), helper)
    elif args.callgrind:
        callgrind(args)
    else:
        asyncio.run(timed(args))


if __name__ == "__main__":
    main()
