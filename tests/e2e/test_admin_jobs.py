"""Admin job routes over HTTP on both backends (SQLite queue; PostgreSQL + Redis queue)."""

from __future__ import annotations

import httpx
import pytest

from arcana.bootstrap import App
from arcana.domain.jobs import JobStatus

# Tokens below are minted for the stored users of this fixture.
pytestmark = pytest.mark.usefixtures("seeded_principals")


def bearer(container: App, *roles: str) -> dict[str, str]:
    token = container.auth_area.tokens.issue("admin-1", frozenset(roles), generation=0).token
    return {"Authorization": f"Bearer {token}"}


URL = "/api/v1/admin/jobs"


async def test_auth_then_role_then_validation(client: httpx.AsyncClient, container: App) -> None:
    r = await client.get(URL)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    user = bearer(container, "user")
    assert (await client.get(URL, headers=user)).status_code == 403
    r = await client.post(URL, json={"job_type": "nope"}, headers=user)
    assert r.status_code == 403
    admin = bearer(container, "user", "admin")
    r = await client.get(URL, params={"status": "weird"}, headers=admin)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "VALIDATION_FAILED"


async def test_enqueue_get_list(client: httpx.AsyncClient, container: App) -> None:
    admin = bearer(container, "admin")
    r = await client.post(
        URL,
        json={
            "job_type": "system.echo",
            "payload": {"message": "hi"},
            "priority": "HIGH",
            "delay_seconds": 600,
            "max_retries": 5,
        },
        headers=admin,
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert set(job) >= {
        "id",
        "job_type",
        "payload",
        "priority",
        "max_retries",
        "retry_count",
        "created_at",
        "scheduled_at",
        "started_at",
        "finished_at",
        "status",
        "last_error",
    }
    assert (job["job_type"], job["priority"], job["status"], job["max_retries"]) == (
        "system.echo",
        "HIGH",
        "scheduled",
        5,
    )
    assert job["payload"] == {"message": "hi"}
    assert job["retry_count"] == 0
    r = await client.get(f"{URL}/{job['id']}", headers=admin)
    assert r.status_code == 200
    assert r.json()["id"] == job["id"]
    r = await client.post(URL, json={"job_type": "system.noop"}, headers=admin)
    assert r.status_code == 202
    assert r.json()["priority"] == "NORMAL"
    r = await client.get(URL, params={"status": "scheduled", "page": 0, "size": 10}, headers=admin)
    body = r.json()
    assert r.status_code == 200
    assert (body["page"], body["size"], body["total"]) == (0, 10, 1)
    assert body["data"][0]["id"] == job["id"]
    r = await client.get(URL, headers=admin)
    assert r.json()["total"] == 2
    assert (await client.get(f"{URL}/missing-id", headers=admin)).status_code == 404


async def test_unknown_type_and_bad_body_are_422(client: httpx.AsyncClient, container: App) -> None:
    admin = bearer(container, "admin")
    for body in (
        {"job_type": "no.such"},
        {"job_type": "system.noop", "priority": "URGENT"},
        {"job_type": "system.noop", "delay_seconds": -1},
        {"payload": {}},
    ):
        r = await client.post(URL, json=body, headers=admin)
        assert r.status_code == 422, body
        assert r.json()["code"] == "VALIDATION_FAILED"


async def test_unique_key_held_answers_200_with_the_existing_job(
    client: httpx.AsyncClient, container: App
) -> None:
    admin = bearer(container, "admin")
    body = {"job_type": "system.noop", "unique_key": "nightly", "delay_seconds": 600}
    first = await client.post(URL, json=body, headers=admin)
    second = await client.post(URL, json=body, headers=admin)
    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]


async def test_retry_only_dead_jobs(client: httpx.AsyncClient, container: App) -> None:
    admin = bearer(container, "admin")
    r = await client.post(
        URL,
        json={"job_type": "system.echo", "payload": {"fail_times": 1}, "max_retries": 0},
        headers=admin,
    )
    job_id = r.json()["id"]
    r = await client.post(f"{URL}/{job_id}/retry", headers=admin)
    assert r.status_code == 409
    assert r.json()["code"] == "CONFLICT"
    [leased] = await container.queue.fetch("w", 1, 30)
    assert await container.queue.fail("w", leased.id, "boom", 0) is JobStatus.DEAD
    r = await client.get(URL, params={"status": "dead"}, headers=admin)
    assert r.json()["data"][0]["last_error"] == "boom"
    r = await client.post(f"{URL}/{job_id}/retry", headers=admin)
    assert r.status_code == 202
    assert (r.json()["status"], r.json()["retry_count"]) == ("queued", 1)
    assert (await client.post(f"{URL}/nope/retry", headers=admin)).status_code == 404


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_queue_backend_follows_the_settings(container: App) -> None:
    assert container.settings.effective_queue_backend == "database"
    assert type(container.queue).__name__ == "SqlJobQueue"
