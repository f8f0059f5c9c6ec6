from __future__ import annotations

from taskiq import TaskiqEvents
from taskiq_redis import ListQueueBroker

from jobs_apps.common import REDIS_URL, record, start_reporter

broker = ListQueueBroker(REDIS_URL, queue_name="bench-taskiq")


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def _startup(state: object) -> None:
    start_reporter()


@broker.task
async def noop(t: float | None = None) -> None:
    record(t)
