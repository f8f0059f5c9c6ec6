from __future__ import annotations

from typing import Any

from saq import Queue

from jobs_apps.common import REDIS_URL, record, start_reporter

queue = Queue.from_url(REDIS_URL, name="bench-saq")


async def noop(ctx: Any, t: float | None = None) -> None:
    record(t)


async def startup(ctx: Any) -> None:
    start_reporter()


settings = {"queue": queue, "functions": [noop], "startup": startup}
