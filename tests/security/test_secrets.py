"""No secret rests in clear (issue 13, third part)."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from arcana.adapters.tables import outbox
from arcana.bootstrap import App
from arcana.config import Settings
from arcana.domain.jobs import Job, JobStatus, Priority
from tests.auth_support import register_and_login, run_reset_requests
from tests.conftest import base_settings, insert_principals
from tests.products_support import admin_headers
from tests.security.conftest import AUTH


async def _reset_rows(container: App) -> list[dict[str, object]]:
    async with container.db.engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.data).where(outbox.c.event_type == "email.password_reset")
        )
        return [dict(r.data) for r in rows]


async def test_reset_token_is_sealed_in_outbox_queue_and_admin_view(
    client: httpx.AsyncClient, container: App
) -> None:
    await insert_principals(container)
    u = await register_and_login(client)
    assert (
        await client.post(f"{AUTH}/forgot-password", json={"email": u["email"]})
    ).status_code == 202
    await run_reset_requests(container)
    [row] = await _reset_rows(container)
    sealed = row["payload"]["reset_token"]  # type: ignore[index]
    assert sealed.startswith("sealed:v1:")
    raw = container.auth_area.sealer.unseal(sealed)
    assert raw not in str(row)
    # The token is what resets the password: the sealed copy opens to the real one.
    resp = await client.post(
        f"{AUTH}/reset-password", json={"token": raw, "new_password": "Brand-New-Pass-7"}
    )
    assert resp.status_code == 204
    await container.events.relay.drain()  # outbox → queue
    listing = await client.get("/api/v1/admin/jobs", headers=admin_headers(container))
    assert listing.status_code == 200
    [job] = [j for j in listing.json()["data"] if j["job_type"] == "email.password_reset"]
    assert job["payload"]["reset_token"] == "***"
    assert raw not in listing.text
    assert sealed not in listing.text
    stored = await container.queue.get(job["id"])
    assert stored is not None
    assert stored.payload["reset_token"].startswith("sealed:v1:")
    with pytest.raises(ValueError, match="does not open"):
        container.auth_area.sealer.unseal(sealed[:-4] + "AAAA")


def test_cli_job_views_show_secret_fields_as_stars() -> None:
    # ``arcana jobs dead --json`` prints ``Job.to_dict()``, as the admin routes do.
    now = datetime.now(UTC)
    job = Job(
        "j1",
        "email.password_reset",
        {"email": "a@example.com", "reset_token": "sealed:v1:abc"},
        Priority.HIGH,
        3,
        0,
        JobStatus.DEAD,
        now,
        now,
    )
    assert job.to_dict()["payload"] == {"email": "a@example.com", "reset_token": "***"}


async def test_published_outbox_rows_are_deleted_after_retention(
    client: httpx.AsyncClient, container: App
) -> None:
    u = await register_and_login(client)
    await client.post(f"{AUTH}/forgot-password", json={"email": u["email"]})
    await run_reset_requests(container)
    await container.events.relay.drain()
    assert await _reset_rows(container)
    await container.maintenance.cleanup()
    assert await _reset_rows(container)  # published just now: kept for the retention period
    async with container.db.engine.begin() as conn:
        await conn.execute(
            update(outbox).values(
                published_at=datetime.now(UTC)
                - timedelta(seconds=container.settings.events.outbox_retention_seconds + 1)
            )
        )
    await container.maintenance.cleanup()
    assert await _reset_rows(container) == []


def test_dev_jwt_secret_file_is_created_private_and_whole(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        settings: Settings = base_settings(jwt_secret=None, var_dir=tmp_path / "var")
        key = settings.jwt_key()
    finally:
        os.umask(old)
    path = tmp_path / "var" / "jwt_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == key
    assert len(key) >= 32
    assert list((tmp_path / "var").iterdir()) == [path]  # no temporary file left behind
    assert settings.jwt_key() == key  # a second start reads the same key
