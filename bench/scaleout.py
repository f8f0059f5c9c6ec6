# ruff: noqa: E402  (sys.path is cleaned before the imports)
"""Scale-out on one machine: 1 vs 2 API processes behind nginx (cached GET, login) and job
throughput with 1, 2 and 3 worker processes, all on one PostgreSQL + Redis, same run.

    make bench-scaleout            # or: .venv/bin/python bench/scaleout.py --seconds 10
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep this folder off sys.path: a script here must never shadow an installed module
# (``grpc.py`` would shadow grpcio).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import loadgen  # noqa: I001  (cleans sys.path first)

import argparse
import asyncio
import json
import time
import uuid

import asyncpg
import httpx

from arcana.config import Settings
from arcana.lifecycle import Lifecycle
from arcana.domain.jobs import JobRequest
from tests.cluster.harness import Cluster

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/10"
PASSWORD = "Bench-Pass-42"


async def _sql(statement: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def make_cluster(root: Path, db: str, prefix: str, apis: int) -> Cluster:
    env = {
        "ARCANA_ENV": "production",
        "ARCANA_JWT_SECRET": "bench-secret-" + "b" * 40,
        "ARCANA_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}",
        "ARCANA_REDIS_URL": REDIS,
        "ARCANA_REDIS_PREFIX": prefix,
        "ARCANA_VAR_DIR": str(root / "var"),
        "ARCANA_PLUGINS_DIR": str(root / "plugins"),
        "ARCANA_LOG_LEVEL": "WARNING",
        # Login limits off the table: the benchmark logs in the same account many times.
        "ARCANA_LOGIN_MAX_FAILURES_PER_ACCOUNT": "1000000",
        "ARCANA_LOGIN_MAX_FAILURES_PER_IP": "1000000",
    }
    c = Cluster(root=root, env=env)
    c.api_ports = [loadgen.free_port() for _ in range(apis)]
    return c


def http_round(
    c: Cluster, product_id: str, seconds: float, connections: int
) -> dict[str, loadgen.Result]:
    login_lua = (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = '{json.dumps({'email': 'bench@example.com', 'password': PASSWORD})}'\n"
    )
    return {
        "cached GET /products/{id}": loadgen.run_wrk(
            f"{c.lb_url}/api/v1/products/{product_id}", seconds, connections, None
        ),
        "POST /auth/login": loadgen.run_wrk(
            f"{c.lb_url}/api/v1/auth/login", seconds, min(connections, 16), login_lua
        ),
    }


async def job_round(settings: Settings, c: Cluster, workers: int, jobs: int) -> float:
    process = Lifecycle.build(settings)
    container = process.app
    try:
        for i in range(workers):
            c.start_worker(i)
        await asyncio.sleep(1.0)  # let workers connect before the clock starts
        batch = [JobRequest("system.noop") for _ in range(jobs)]
        t0 = time.perf_counter()
        for i in range(0, jobs, 500):
            await container.queue.enqueue_many(batch[i : i + 500])
        while True:
            stats = await container.queue.stats()
            pending = sum(stats.depth.values()) + stats.running + stats.retrying + stats.scheduled
            if pending == 0:
                break
            await asyncio.sleep(0.02)
        return jobs / (time.perf_counter() - t0)
    finally:
        for w in c.workers:
            w.stop()
        c.workers.clear()
        await process.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--jobs", type=int, default=20000)
    args = ap.parse_args()
    if not loadgen.have_wrk():
        raise SystemExit("wrk is required: apt-get install -y wrk")
    run = uuid.uuid4().hex[:8]
    db, prefix = f"arcana_bench_{run}", f"arcana-bench-{run}"
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="arcana-scaleout-"))
    (root / "plugins").mkdir()
    asyncio.run(_sql(f'CREATE DATABASE "{db}"'))
    http_rows: dict[int, dict[str, loadgen.Result]] = {}
    job_rows: dict[int, float] = {}
    try:
        seed = make_cluster(root, db, prefix, 1)
        assert seed.cli("migrate").returncode == 0
        seed.cli(
            "users",
            "create",
            "--email",
            "bench@example.com",
            "--name",
            "Bench",
            "--admin",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )
        for apis in (1, 2):
            c = make_cluster(root, db, prefix, apis)
            try:
                for i in range(apis):
                    c.start_api(i)
                c.start_nginx()
                token = httpx.post(
                    f"{c.lb_url}/api/v1/auth/login",
                    json={"email": "bench@example.com", "password": PASSWORD},
                ).json()["access_token"]
                pid = httpx.post(
                    f"{c.lb_url}/api/v1/products",
                    json={"name": "Bench", "price": 1, "stock": 5},
                    headers={"Authorization": f"Bearer {token}"},
                ).json()["id"]
                http_rows[apis] = http_round(c, pid, args.seconds, args.connections)
            finally:
                c.stop()
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            database_url=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}",
            redis_url=REDIS,
            redis_prefix=prefix,
            jwt_secret="bench-secret-" + "b" * 40,
        )
        for workers in (1, 2, 3):
            c = make_cluster(root, db, prefix, 0)
            job_rows[workers] = asyncio.run(job_round(settings, c, workers, args.jobs))
    finally:
        asyncio.run(_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))

    print(f"\nHTTP behind nginx, {args.connections} connections (login: 16), {args.seconds:.0f} s")
    print(f"{'route':30} {'1 API rps':>10} {'2 API rps':>10} {'ratio':>6} {'p99 1/2 (ms)':>14}")
    for route in http_rows[1]:
        one, two = http_rows[1][route], http_rows[2][route]
        print(
            f"{route:30} {one.rps:10.0f} {two.rps:10.0f} {two.rps / one.rps:6.2f} "
            f"{one.p99_ms:6.1f}/{two.p99_ms:<6.1f}  errors {one.errors}/{two.errors}"
        )
    print(f"\nno-op jobs ({args.jobs}), Redis queue, --concurrency 8 per worker")
    print(f"{'workers':>8} {'jobs/s':>10} {'vs 1':>6}")
    for workers, rate in job_rows.items():
        print(f"{workers:8} {rate:10.0f} {rate / job_rows[1]:6.2f}")


if __name__ == "__main__":
    main()
