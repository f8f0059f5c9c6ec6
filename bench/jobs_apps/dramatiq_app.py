from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from jobs_apps.common import REDIS_URL, record, start_reporter

broker = RedisBroker(url=REDIS_URL, namespace="bench-dramatiq")
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def noop(t: float | None = None) -> None:
    record(t)


if os.environ.get("BENCH_WORKER") == "1":
    start_reporter()
