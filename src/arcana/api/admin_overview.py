"""``/api/v1/admin/overview`` and ``/api/v1/admin/schedule``: the console's dashboard figures."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel

from arcana.api.deps import AdminPrincipal, ServicesDep
from arcana.domain.events import DomainEvent
from arcana.domain.products import ProductQuery, ProductStatus
from arcana.domain.timestamps import iso_z
from arcana.services.jobs import periodic_schedule

router = APIRouter(prefix="/api/v1/admin", tags=["admin: overview"])

WINDOW_SECONDS = 60.0


class EventRate:
    """Domain events committed by this process over the last minute (a sliding window of
    per-second buckets), fed by the commit listeners of the services."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: deque[tuple[int, int]] = deque()

    def record(self, events: list[DomainEvent]) -> None:
        if not events:
            return
        second = int(self._clock())
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1] = (second, self._buckets[-1][1] + len(events))
        else:
            self._buckets.append((second, len(events)))
        self._trim(second)

    def _trim(self, now: int) -> None:
        while self._buckets and self._buckets[0][0] <= now - WINDOW_SECONDS:
            self._buckets.popleft()

    def per_minute(self) -> int:
        self._trim(int(self._clock()))
        return sum(count for _, count in self._buckets)


class JobCounts(BaseModel):
    depth: dict[str, int]
    queued: int
    scheduled: int
    retrying: int
    running: int
    succeeded: int
    dead: int


class Overview(BaseModel):
    users: int
    products: dict[str, int]
    jobs: JobCounts
    dead_letters: int
    events_per_minute: int
    plugins: dict[str, int]


class PeriodicRead(BaseModel):
    job_type: str
    every_seconds: int
    next_run_at: str


class Schedule(BaseModel):
    data: list[PeriodicRead]


@router.get("/overview", response_model=Overview, summary="Counts for the console's overview")
async def overview(_admin: AdminPrincipal, services: ServicesDep, request: Request) -> Overview:
    async def products_with(status: ProductStatus) -> int:
        page = await services.products.list_products(ProductQuery(size=1, status=status))
        return page.total

    statuses = list(ProductStatus)
    users, stats, plugins, *product_totals = await asyncio.gather(
        services.users.search_users(None, 0, 1),
        services.jobs.stats(),
        services.plugins.list_plugins(),
        *(products_with(s) for s in statuses),
    )
    plugin_states = {"active": 0, "disabled": 0, "failed": 0}
    for p in plugins:
        plugin_states[p["state"]] = plugin_states.get(p["state"], 0) + 1
    jobs = stats.to_dict()
    rate: EventRate | None = getattr(request.app.state, "event_rate", None)
    return Overview(
        users=users[1],
        products={s.value: n for s, n in zip(statuses, product_totals, strict=True)},
        jobs=JobCounts(**{k: jobs[k] for k in JobCounts.model_fields}),
        dead_letters=jobs["dead"],
        events_per_minute=rate.per_minute() if rate is not None else 0,
        plugins=plugin_states,
    )


@router.get("/schedule", response_model=Schedule, summary="Periodic jobs with their next run")
async def schedule(_admin: AdminPrincipal, services: ServicesDep) -> Schedule:
    now = time.time()
    return Schedule(
        data=[
            PeriodicRead(
                job_type=job_type,
                every_seconds=every,
                next_run_at=iso_z(datetime.fromtimestamp((int(now // every) + 1) * every, UTC)),
            )
            for job_type, every in periodic_schedule(services.settings.jobs).items()
        ]
    )
