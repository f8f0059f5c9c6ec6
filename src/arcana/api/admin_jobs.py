"""Admin routes of the job queue: list, enqueue, inspect, retry from the dead-letter set."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from arcana.api.deps import AdminPrincipal, ServicesDep
from arcana.domain.jobs import JobStatus, Priority

router = APIRouter(prefix="/api/v1/admin/jobs", tags=["admin: jobs"])

StatusName = Literal["queued", "scheduled", "running", "succeeded", "retrying", "dead"]
PriorityName = Literal["LOW", "NORMAL", "HIGH", "CRITICAL"]


class JobRead(BaseModel):
    id: str
    job_type: str
    payload: dict[str, Any]
    priority: PriorityName
    max_retries: int
    retry_count: int
    created_at: str
    scheduled_at: str
    started_at: str | None
    finished_at: str | None
    status: StatusName
    last_error: str | None
    unique_key: str | None = None


class JobPage(BaseModel):
    data: list[JobRead]
    page: int
    size: int
    total: int


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_type: str = Field(min_length=1, max_length=100)
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: PriorityName | None = None
    delay_seconds: float = Field(default=0.0, ge=0, le=365 * 86400)
    max_retries: int = Field(default=3, ge=0, le=100)
    unique_key: str | None = Field(default=None, min_length=1, max_length=200)


@router.get("", response_model=JobPage)
async def list_jobs(
    _admin: AdminPrincipal,
    services: ServicesDep,
    status_: Annotated[StatusName | None, Query(alias="status")] = None,
    page: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    items, total = await services.jobs.list_jobs(
        JobStatus(status_) if status_ else None, page, size
    )
    return {"data": [j.to_dict() for j in items], "page": page, "size": size, "total": total}


@router.post(
    "",
    response_model=JobRead,
    status_code=status.HTTP_202_ACCEPTED,
    responses={200: {"model": JobRead, "description": "unique_key held: the existing job"}},
)
async def enqueue_job(
    _admin: AdminPrincipal, services: ServicesDep, body: JobCreate, response: Response
) -> dict[str, Any]:
    job = await services.jobs.enqueue(
        body.job_type,
        body.payload,
        priority=Priority[body.priority] if body.priority else None,
        delay_seconds=body.delay_seconds,
        max_retries=body.max_retries,
        unique_key=body.unique_key,
    )
    if job.existing:
        response.status_code = status.HTTP_200_OK
    return job.to_dict()


@router.get("/{job_id}", response_model=JobRead)
async def get_job(_admin: AdminPrincipal, services: ServicesDep, job_id: str) -> dict[str, Any]:
    return (await services.jobs.get(job_id)).to_dict()


@router.post("/{job_id}/retry", response_model=JobRead, status_code=status.HTTP_202_ACCEPTED)
async def retry_job(_admin: AdminPrincipal, services: ServicesDep, job_id: str) -> dict[str, Any]:
    return (await services.jobs.retry(job_id)).to_dict()
