# ruff: noqa: E402  (sys.path is cleaned before the imports)
"""Cost of tracing: off, on at 100 % sampling and on at 1 % sampling.

    .venv/bin/python bench/tracing.py                  # 10 s per measurement
    .venv/bin/python bench/tracing.py --duration 1     # a quick check that it runs

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
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import httpx
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

from arcana import tracing
from arcana.api.app import create_app
from arcana.config import Settings
from arcana.domain.jobs import JobRequest
from arcana.domain.products import NewProduct
from arcana.lifecycle import Lifecycle
from arcana.worker.jobs import build_registry
from arcana.worker.runner import Worker


class DropExporter(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def set_mode(mode: str) -> tuple[TracerProvider | None, DropExporter | None]:
    tracing.reset_for_tests()
    if mode == "off":
        return None, None
    ratio = {"100%": 1.0, "1%": 0.01}[mode]
    sampler = ParentBased(ALWAYS_ON if ratio == 1.0 else TraceIdRatioBased(ratio))
    exporter = DropExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=65536))
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


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per mode (median is shown)")
    args = ap.parse_args()
    modes = ["off", "100%", "1%"]
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


def _run() -> Any:
    return asyncio.run(main())


if __name__ == "__main__":
    _run()
