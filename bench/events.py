# ruff: noqa: E402  (sys.path is cleaned before the imports)
"""Domain-event delivery benchmark (``make bench-events``).

1. commit→handler latency at a steady commit rate (default 500 events/s), side by side:
   - redis: PostgreSQL outbox → relay → Redis stream → consumer group member → handler
   - embedded: SQLite outbox → relay → in-process handler
2. the maximum sustained rate of one consumer (stream pre-filled, handlers trivial) and of
   one relay (outbox pre-filled, PostgreSQL → Redis).

Uses the local PostgreSQL and Redis (ARCANA_BENCH_PG_URL, ARCANA_BENCH_REDIS_URL); creates a
throw-away database and key prefix and removes them afterwards.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep this folder off sys.path: a script here must never shadow an installed module
# (``grpc.py`` would shadow grpcio).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import tempfile
import time
import uuid
from typing import Any

import asyncpg
from redis.asyncio import Redis

from arcana.bootstrap import App, migrate
from arcana.config import Settings
from arcana.domain.events import DomainEvent
from arcana.lifecycle import Lifecycle

PG = os.environ.get("ARCANA_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("ARCANA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")


def settings(**kw: Any) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, env="test", jwt_secret="bench-" + "x" * 40, log_json=False, **kw
    )


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * p), len(ordered) - 1)] * 1000


def _consumer_process(cfg: dict[str, Any], total: int, ready: Any, out: Any) -> None:
    """The worker process: one consumer-group member whose handler records latencies."""

    async def run() -> None:
        process = Lifecycle.build(settings(**cfg))
        container = process.app
        lat: list[tuple[int, float]] = []
        done = asyncio.Event()

        async def handler(envelope: dict[str, Any]) -> None:
            lat.append((envelope["data"]["n"], time.time()))
            if len(lat) >= total:
                done.set()

        container.events.handlers.register("bench.tick", handler)
        consumer = container.events.consumer("bench")
        await consumer.ensure_group()
        process.runtime.spawn("bench-consumer", consumer.run)
        ready.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 120)
        await process.stop()
        out.put(lat)

    asyncio.run(run())


async def produce(container: App, rate: int, total: int, committed: dict[int, float]) -> float:
    """Commit ``total`` events at ``rate``/s from 16 concurrent writers (like API requests)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    writers = 16

    async def writer(k: int) -> None:
        for i in range(k, total, writers):
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            async with container.uow() as uow:
                uow.record(DomainEvent("bench.tick", {"n": i}))
                await uow.commit()
            committed[i] = time.time()

    await asyncio.gather(*(writer(k) for k in range(writers)))
    return total / (loop.time() - t0)


def summary(lat: list[float], total: int, achieved: float) -> dict[str, float]:
    return {
        "events": len(lat),
        "total": total,
        "rate": achieved,
        "p50": pct(lat, 0.50),
        "p99": pct(lat, 0.99),
    }


async def latency_redis(cfg: dict[str, Any], rate: int, seconds: float) -> dict[str, float]:
    """API process (commits + relay) here, one consumer in a separate worker process."""
    total = int(rate * seconds)
    ctx = multiprocessing.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_consumer_process, args=(cfg, total, ready, out))
    proc.start()
    await asyncio.to_thread(ready.wait, 120)
    process = Lifecycle.build(settings(**cfg))
    container = process.app
    try:
        process.start_relay()
        committed: dict[int, float] = {}
        achieved = await produce(container, rate, total, committed)
        handled: list[tuple[int, float]] = await asyncio.to_thread(out.get, True, 150)
        lat = [t - committed[n] for n, t in handled]
    finally:
        await process.stop()
        await asyncio.to_thread(proc.join, 30)
    return summary(lat, total, achieved)


async def latency_embedded(process: Lifecycle, rate: int, seconds: float) -> dict[str, float]:
    """One process: commits, relay and in-process handlers."""
    container = process.app
    total = int(rate * seconds)
    handled: list[tuple[int, float]] = []

    async def handler(envelope: dict[str, Any]) -> None:
        handled.append((envelope["data"]["n"], time.time()))

    container.events.handlers.register("bench.tick", handler)
    process.start_relay()
    committed: dict[int, float] = {}
    achieved = await produce(container, rate, total, committed)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while len(handled) < total and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return summary([t - committed[n] for n, t in handled], total, achieved)


async def consumer_throughput(container: App, n: int) -> float:
    redis = container.redis
    assert redis is not None
    count = 0

    async def handler(envelope: dict[str, Any]) -> None:
        nonlocal count
        count += 1

    container.events.handlers.register("bench.load", handler)
    consumer = container.events.consumer("bench-load")
    await redis.delete(container.events.stream)
    await consumer.ensure_group()
    for start in range(0, n, 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for _ in range(start, min(start + 1000, n)):
                env = DomainEvent("bench.load", {"x": 1}).envelope()
                pipe.xadd(container.events.stream, {"event": json.dumps(env)})
            await pipe.execute()
    t0 = time.perf_counter()
    while count < n:
        await consumer.read_new(block_ms=100)
    return n / (time.perf_counter() - t0)


async def relay_throughput(container: App, n: int) -> float:
    for start in range(0, n, 500):
        async with container.uow() as uow:
            uow.record(*(DomainEvent("bench.relay", {"n": i}) for i in range(start, start + 500)))
            await uow.commit()
    relay = container.events.new_relay()
    t0 = time.perf_counter()
    await relay.drain()
    return relay.published / (time.perf_counter() - t0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--load", type=int, default=20_000, help="events for throughput runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    run = uuid.uuid4().hex[:8]
    db_name = f"arcana_bench_{run}"
    prefix = f"arcana-bench-{run}"
    admin = await asyncpg.connect(PG)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    pg_url = PG.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + "/" + db_name
    tmp = tempfile.mkdtemp(prefix="arcana-bench-")
    rows: list[tuple[str, str]] = []
    try:
        cfg = {"database_url": pg_url, "redis_url": REDIS, "redis_prefix": prefix, "var_dir": tmp}
        migrator_process = Lifecycle.build(settings(**cfg))
        migrator = migrator_process.app
        await migrate(migrator)
        await migrator_process.stop()
        r = await latency_redis(cfg, args.rate, args.seconds)
        embedded_process = Lifecycle.build(
            settings(database_url=f"sqlite+aiosqlite:///{tmp}/bench.db", var_dir=tmp)
        )
        await embedded_process.start()
        try:
            e = await latency_embedded(embedded_process, args.rate, args.seconds)
        finally:
            await embedded_process.stop()
        rows.append(
            ("commit→handler p50, redis (PG outbox → stream → group)", f"{r['p50']:.1f} ms")
        )
        rows.append(("commit→handler p99, redis", f"{r['p99']:.1f} ms"))
        rows.append(("commit→handler p50, embedded (SQLite → in-process)", f"{e['p50']:.1f} ms"))
        rows.append(("commit→handler p99, embedded", f"{e['p99']:.1f} ms"))
        rows.append(("p50 ratio redis / embedded", f"{r['p50'] / max(e['p50'], 1e-6):.2f}x"))
        rows.append(
            ("offered rate (redis / embedded)", f"{r['rate']:.0f} / {e['rate']:.0f} events/s")
        )
        rows.append(("handled (redis / embedded)", f"{r['events']:.0f} / {e['events']:.0f}"))

        load_process = Lifecycle.build(
            settings(database_url=pg_url, redis_url=REDIS, redis_prefix=prefix + "-l", var_dir=tmp)
        )
        load = load_process.app
        try:
            c = await consumer_throughput(load, args.load)
            rl = await relay_throughput(load, args.load)
        finally:
            await load_process.stop()
        rows.append(("one consumer, max sustained", f"{c:,.0f} events/s"))
        rows.append(("one relay (PG → Redis), max sustained", f"{rl:,.0f} events/s"))
        rows.append(("consumer headroom over 500/s", f"{c / args.rate:.1f}x"))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()
        redis = Redis.from_url(REDIS)
        async for key in redis.scan_iter(match=f"{prefix}*"):
            await redis.delete(key)
        await redis.aclose()

    rows.append(("load average (shared machine)", " ".join(f"{x:.1f}" for x in os.getloadavg())))
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  value")
    print("-" * (width + 20))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    asyncio.run(main())
