"""``arcana demo-data`` through the real executable."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.process import arcana_bin

pytestmark = pytest.mark.slow


def test_demo_data_fills_catalog(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    env = {"PATH": "/usr/bin:/bin", "ARCANA_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    out = subprocess.run(
        [arcana_bin(), "demo-data", "--products", "1234", "--batch-size", "500", "--seed", "7"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "added 1234 products" in out.stdout
    with sqlite3.connect(db) as conn:
        count, statuses, min_stock = conn.execute(
            "SELECT count(*), count(DISTINCT status), min(stock) FROM products"
        ).fetchone()
    assert (count, statuses) == (1234, 1)
    assert min_stock >= 0


def test_demo_data_bad_usage(tmp_path: Path) -> None:
    out = subprocess.run(
        [arcana_bin(), "demo-data", "--products", "-1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 2


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_serve_starts_grpc_and_stops_gracefully(tmp_path: Path, server: str) -> None:
    import asyncio

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tests.process import ArcanaProcess, free_port

    http_port, grpc_port = free_port(), free_port()
    env = {
        "ARCANA_HTTP_SERVER": server,
        "ARCANA_HTTP_PORT": str(http_port),
        "ARCANA_GRPC_PORT": str(grpc_port),
        "ARCANA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/serve.db",
    }
    proc = ArcanaProcess(["serve"], env=env, cwd=tmp_path)
    proc.env.pop("ARCANA_REDIS_URL", None)

    async def check() -> int:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
            reply = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="arcana.product.v1.ProductService"),
                timeout=10,
            )
            return int(reply.status)

    with proc:
        proc.wait_http(f"http://127.0.0.1:{http_port}/healthz")
        assert asyncio.run(check()) == health_pb2.HealthCheckResponse.SERVING
    assert proc.stop() == 0
