"""``arcana jobs stats|dead|retry|enqueue``: inspect and operate the job queue."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer

from arcana.cli.console import fail, run_with_services
from arcana.domain.jobs import Job, JobStatus, parse_priority
from arcana.errors import ArcanaError

if TYPE_CHECKING:
    from arcana.services.app import Services

jobs_app = typer.Typer(
    help="Inspect the job queue, the dead-letter set, retry or enqueue jobs.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _line(job: Job) -> str:
    return (
        f"{job.id}  {job.job_type:<22} {job.status.value:<9} retries={job.retry_count}/"
        f"{job.max_retries}  {job.last_error or ''}"
    ).rstrip()


@jobs_app.command("stats")
def stats(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Queue depth per priority, scheduled, retrying, running, succeeded and dead counts."""

    async def go(c: Services) -> dict[str, Any]:
        return (await c.jobs.stats()).to_dict()

    data = run_with_services(go)
    if as_json:
        typer.echo(json.dumps(data))
        return
    for name, depth in data["depth"].items():
        typer.echo(f"queued[{name}]: {depth}")
    for key in ("queued", "scheduled", "retrying", "running", "succeeded", "dead"):
        typer.echo(f"{key}: {data[key]}")


@jobs_app.command("dead")
def dead(
    page: int = typer.Option(0, min=0),
    size: int = typer.Option(50, min=1, max=1000),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List dead jobs (newest first) with their last error."""

    async def go(c: Services) -> tuple[list[Job], int]:
        return await c.jobs.list_jobs(JobStatus.DEAD, page, size)

    items, total = run_with_services(go)
    if as_json:
        typer.echo(
            json.dumps(
                {"data": [j.to_dict() for j in items], "page": page, "size": size, "total": total}
            )
        )
        return
    for job in items:
        typer.echo(_line(job))
    typer.echo(f"{total} dead job(s)")


@jobs_app.command("retry")
def retry(job_id: str) -> None:
    """Queue a dead job again."""

    async def go(c: Services) -> Job:
        return await c.jobs.retry(job_id)

    job = run_with_services(go)
    typer.echo(f"queued {job.id} ({job.job_type}), retry_count={job.retry_count}")


@jobs_app.command("enqueue")
def enqueue(
    job_type: str,
    payload: str = typer.Option("{}", "--payload", help="JSON object"),
    priority: str = typer.Option(None, "--priority", help="LOW, NORMAL, HIGH or CRITICAL"),
    delay: float = typer.Option(0.0, "--delay", min=0.0, help="Seconds before it may run"),
    max_retries: int = typer.Option(3, "--max-retries", min=0),
    unique_key: str = typer.Option(None, "--unique-key"),
) -> None:
    """Enqueue a job of a registered type; prints its id."""
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise fail(f"--payload is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise fail("--payload must be a JSON object")
    try:
        prio = parse_priority(priority) if priority is not None else None
    except ArcanaError as exc:
        raise fail(exc.detail) from None

    async def go(c: Services) -> Job:
        return await c.jobs.enqueue(
            job_type,
            data,
            priority=prio,
            delay_seconds=delay,
            max_retries=max_retries,
            unique_key=unique_key,
        )

    job = run_with_services(go)
    typer.echo(job.id + ("  (existing job holds the unique key)" if job.existing else ""))


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")
