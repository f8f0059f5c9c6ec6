"""The real ``arcana`` executable, as a newcomer runs it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.process import ArcanaProcess, arcana_bin, free_port

pytestmark = pytest.mark.slow


def test_version() -> None:
    out = subprocess.run([arcana_bin(), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("arcana ")


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_serve_embedded_with_no_services(tmp_path: Path, server: str) -> None:
    """Fresh directory, no configuration: SQLite under ./var, /healthz answers, SIGTERM exits 0."""
    port = free_port()
    env = {
        "ARCANA_HTTP_SERVER": server,
        "ARCANA_HTTP_PORT": str(port),
        "ARCANA_GRPC_PORT": "0",
        "ARCANA_REDIS_URL": "",
        "ARCANA_DATABASE_URL": "",
    }
    env = {k: v for k, v in env.items() if v}
    proc = ArcanaProcess(["serve"], env=env, cwd=tmp_path)
    proc.env.pop("ARCANA_REDIS_URL", None)
    proc.env.pop("ARCANA_DATABASE_URL", None)
    with proc:
        proc.wait_http(f"http://127.0.0.1:{port}/healthz")
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["checks"] == {"database": True}
        assert (tmp_path / "var" / "arcana.db").exists()
        assert (tmp_path / "var" / "jwt_secret").exists()
    assert proc.stop() == 0


def test_migrate_on_postgres(pg_url: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [arcana_bin(), "migrate"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "ARCANA_DATABASE_URL": pg_url},
    )
    assert out.returncode == 0, out.stderr
    assert "up to date" in out.stdout


def test_production_without_secret_refuses_to_start(tmp_path: Path) -> None:
    out = subprocess.run(
        [arcana_bin(), "serve"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "ARCANA_ENV": "production"},
        timeout=30,
    )
    assert out.returncode == 1
    assert "ARCANA_JWT_SECRET is required" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
