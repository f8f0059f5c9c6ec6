"""Shared by every benchmarked worker: count handled jobs and enqueue->start latencies, and
report them to Redis every 50 ms from a thread (the same small overhead for every library)."""

from __future__ import annotations

import os
import threading
import time

import redis

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
TAG = os.environ.get("BENCH_TAG", "x")

_count = 0
_lat: list[float] = []
_lock = threading.Lock()


_first = 0.0
_last = 0.0
_cpu_first = 0.0
_cpu_last = 0.0


def record(enqueued_at: float | None) -> None:
    """Count one handled job; keep wall and process CPU time of the first and the last one.

    CPU is read here, in the process that runs the handlers, rather than sampled by the
    benchmark: a fast worker can finish most of a queue before the first 50 ms report, which
    left no window to sample in."""
    global _count, _first, _last, _cpu_first, _cpu_last
    _last = time.time()
    _cpu_last = time.process_time()
    if not _count:
        _first, _cpu_first = _last, _cpu_last
    _count += 1
    if enqueued_at:
        _lat.append(time.time() - float(enqueued_at))


def _report() -> None:
    r = redis.Redis.from_url(REDIS_URL)
    key = f"bench:{TAG}:count:{os.getpid()}"
    while True:
        time.sleep(0.05)
        r.set(key, _count)
        if _count:
            r.set(
                f"bench:{TAG}:span:{os.getpid()}",
                f"{_first} {_last} {_cpu_first} {_cpu_last} {_count}",
            )
        if _lat:
            chunk = _lat[:]
            del _lat[: len(chunk)]
            r.rpush(f"bench:{TAG}:lat", *chunk)


def start_reporter() -> None:
    threading.Thread(target=_report, daemon=True, name="bench-reporter").start()
