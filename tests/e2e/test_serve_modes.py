"""Contract §8: with Redis configured, `arcana serve` runs no job workers unless started with
`--with-worker` (embedded mode always runs them: see the flow tests)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL, truncate_all, wait_for
from tests.process import ArcanaProcess, arcana_bin, free_port

pytestmark = pytest.mark.slow

PASSWORD = "Modes-Pass-42"


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
async def test_serve_runs_jobs_only_with_the_worker_flag(
    pg_url: str, tmp_path: Path, server: str
) -> None:
    await truncate_all(pg_url)
    env = {
        "ARCANA_HTTP_SERVER": server,
        "ARCANA_DATABASE_URL": pg_url,
        "ARCANA_REDIS_URL": REDIS_URL,
        "ARCANA_REDIS_PREFIX": f"arcana-modes-{uuid.uuid4().hex[:8]}",
        "ARCANA_JWT_SECRET": "modes-secret-" + "m" * 40,
        "ARCANA_ARGON2_MEMORY_KIB": "1024",
        "ARCANA_ARGON2_TIME_COST": "1",
        "ARCANA_GRPC_PORT": "0",
        "ARCANA_VAR_DIR": str(tmp_path / "var"),
    }
    created = subprocess.run(
        [
            arcana_bin(),
            "users",
            "create",
            "--email",
            "ops@example.com",
            "--name",
            "Ops",
            "--admin",
            "--password-stdin",
        ],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=60,
    )
    assert created.returncode == 0, created.stderr

    async def serve_and_enqueue(
        args: list[str],
    ) -> tuple[ArcanaProcess, str, httpx.AsyncClient, dict[str, str]]:
        port = free_port()
        proc = ArcanaProcess(["serve", "--port", str(port), *args], env=env, cwd=tmp_path).start()
        proc.wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60)
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
        r = await http.post(
            "/api/v1/auth/login", json={"email": "ops@example.com", "password": PASSWORD}
        )
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = await http.post(
            "/api/v1/admin/jobs", json={"job_type": "system.noop", "payload": {}}, headers=headers
        )
        assert r.status_code == 202, r.text
        return proc, r.json()["id"], http, headers

    # Without the flag the job waits for an `arcana worker`: still queued after the API has
    # run its own background loops (the relay delivered a fresh event meanwhile).
    proc, job_id, http, headers = await serve_and_enqueue([])
    try:
        r = await http.post(
            "/api/v1/auth/register",
            json={
                "name": "Probe",
                "email": f"p-{uuid.uuid4().hex[:8]}@example.com",
                "password": PASSWORD,
            },
        )
        assert r.status_code == 201
        r = await http.get(f"/api/v1/admin/jobs/{job_id}", headers=headers)
        assert r.json()["status"] == "queued"
    finally:
        await http.aclose()
        proc.stop()

    # With the flag, the same kind of process runs it (and the job left behind).
    proc, second_id, http, headers = await serve_and_enqueue(["--with-worker"])
    try:

        async def done(jid: str) -> bool:
            r = await http.get(f"/api/v1/admin/jobs/{jid}", headers=headers)
            return bool(r.json()["status"] == "succeeded")

        await wait_for(lambda: done(second_id), timeout=30, interval=0.1)
        await wait_for(lambda: done(job_id), timeout=30, interval=0.1)
    finally:
        await http.aclose()
        proc.stop()
