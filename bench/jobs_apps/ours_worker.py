"""Our worker (the real ``Worker`` and ``RedisJobQueue``, as ``arcana worker`` runs them) with a
no-op handler."""

from __future__ import annotations

import asyncio
import os
import signal

import uvloop
from redis.asyncio import Redis

from arcana.adapters.jobqueue.redis import RedisJobQueue
from arcana.worker.registry import HandlerRegistry, JobContext
from arcana.worker.runner import Worker
from jobs_apps.common import REDIS_URL, record, start_reporter

PREFIX = os.environ.get("BENCH_PREFIX", "bench-arcana")


async def main() -> None:
    redis = Redis.from_url(REDIS_URL, max_connections=256)
    queue = RedisJobQueue(redis, PREFIX, finished_ttl=3600)
    registry = HandlerRegistry()

    @registry.handler("system.noop")
    async def noop(ctx: JobContext) -> None:
        record(ctx.payload.get("t"))

    worker = Worker(queue, registry)  # library defaults: concurrency 32, batches of 32
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    start_reporter()
    await worker.run(stop)


if __name__ == "__main__":
    uvloop.run(main())
