"""Soak test: mixed traffic at a fixed rate against ``arcana serve`` + ``arcana worker`` on
PostgreSQL + Redis, for N minutes.

    .venv/bin/python bench/soak.py                 # 10 minutes, 40 requests/s
    .venv/bin/python bench/soak.py --duration 60   # the short run (make bench-soak ARGS=...)

It creates its own database (``arcana_soak_<id>``, dropped at the end) and Redis key prefix,
starts both processes, sends an open-loop request stream (latency counted from the moment a
request was due, so a stall is not hidden by waiting), then reports throughput, latency
percentiles, errors (must be 0), resident memory per process at the start (after warm-up) and
at the end (growth must stay under 10 %), and the queue/outbox depth once traffic stops (must
drain to 0). Exit status 1 when a criterion fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep this folder off sys.path: a script here must never shadow an installed module.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402

import asyncpg  # noqa: E402
import httpx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ARCANA = str(Path(sys.executable).parent / "arcana")
PASSWORD = "Soak-Horse-42"

MIX: list[tuple[str, int]] = [
    ("get_product", 50),
    ("list_products", 15),
    ("update_stock", 12),
    ("register", 6),
    ("login", 6),
    ("forgot_password", 4),
    ("me", 7),
]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = uuid.uuid4().hex[:8]
        self.db_name = f"arcana_soak_{self.run_id}"
        self.workdir = Path(tempfile.mkdtemp(prefix="arcana-soak-"))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        base_dsn = args.pg_url.rsplit("/", 1)[0]
        self.db_url = f"{base_dsn.replace('postgresql://', 'postgresql+asyncpg://')}/{self.db_name}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ARCANA_")},
            "ARCANA_ENV": "test",
            "ARCANA_DATABASE_URL": self.db_url,
            "ARCANA_REDIS_URL": args.redis_url,
            "ARCANA_REDIS_PREFIX": f"arcana-soak-{self.run_id}",
            "ARCANA_JWT_SECRET": "soak-secret-" + "x" * 40,
            "ARCANA_HTTP_PORT": str(self.port),
            "ARCANA_GRPC_PORT": "0",
            "ARCANA_VAR_DIR": str(self.workdir / "var"),
            "ARCANA_PLUGINS_DIR": str(self.workdir / "plugins"),
            "ARCANA_LOG_LEVEL": "WARNING",
            "ARCANA_LOGIN_MAX_FAILURES_PER_IP": "1000000",
            # One load generator, one address: per-address limits would answer it 429.
            "ARCANA_REGISTER_LIMIT_PER_IP": "1000000000",
            "ARCANA_RESET_LIMIT_PER_IP": "1000000000",
            "ARCANA_RESET_LIMIT_PER_EMAIL": "1000000000",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.latencies: list[float] = []
        self.by_op: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.late = 0
        self.admin_token = ""
        self.products: list[str] = []
        self.users: list[str] = []

    # -- set-up ------------------------------------------------------------------------------
    def _cli(self, *args: str, stdin: str = "") -> str:
        out = subprocess.run(
            [ARCANA, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.workdir,
            timeout=120,
        )
        if out.returncode != 0:
            raise SystemExit(f"arcana {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    async def setup(self) -> None:
        (self.workdir / "plugins").mkdir(parents=True, exist_ok=True)
        conn = await asyncpg.connect(self.args.pg_url)
        try:
            await conn.execute(f'CREATE DATABASE "{self.db_name}"')
        finally:
            await conn.close()
        self._cli("migrate")
        self._cli(
            "users",
            "create",
            "--email",
            "admin@soak.example",
            "--name",
            "Admin",
            "--admin",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )
        for name, args in (("serve", ["serve"]), ("worker", ["worker"])):
            log = (self.workdir / f"{name}.log").open("ab")
            self.procs[name] = subprocess.Popen(
                [ARCANA, *args], env=self.env, cwd=self.workdir, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 120
        async with httpx.AsyncClient(base_url=self.base, timeout=5) as c:
            while True:
                try:
                    if (await c.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("arcana serve did not become ready")
                await asyncio.sleep(0.2)
            resp = await c.post(
                "/api/v1/auth/login", json={"email": "admin@soak.example", "password": PASSWORD}
            )
            self.admin_token = resp.json()["access_token"]
            for i in range(20):
                resp = await c.post(
                    "/api/v1/products",
                    json={
                        "name": f"Soak item {i}",
                        "price": 10 + i,
                        "stock": 1_000_000,
                        "category": f"c{i % 4}",
                    },
                    headers=self._admin(),
                )
                self.products.append(resp.json()["id"])
            for _ in range(5):
                email = f"seed-{uuid.uuid4().hex[:10]}@soak.example"
                await c.post(
                    "/api/v1/auth/register",
                    json={"name": "Seed", "email": email, "password": PASSWORD},
                )
                self.users.append(email)

    def _admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    # -- traffic -----------------------------------------------------------------------------
    async def request(self, c: httpx.AsyncClient, op: str, due: float, record: bool) -> None:
        rng = random
        pid = rng.choice(self.products)
        try:
            if op == "get_product":
                resp = await c.get(f"/api/v1/products/{pid}")
                ok = resp.status_code == 200
            elif op == "list_products":
                resp = await c.get(
                    "/api/v1/products",
                    params={
                        "page": rng.randrange(3),
                        "size": 10,
                        "category": f"c{rng.randrange(4)}",
                    },
                )
                ok = resp.status_code == 200
            elif op == "update_stock":
                resp = await c.post(
                    f"/api/v1/products/{pid}/stock",
                    json={"quantity_change": rng.choice((-1, 1))},
                    headers=self._admin(),
                )
                ok = resp.status_code == 200
            elif op == "register":
                email = f"soak-{uuid.uuid4().hex[:12]}@soak.example"
                resp = await c.post(
                    "/api/v1/auth/register",
                    json={"name": "Soak", "email": email, "password": PASSWORD},
                )
                ok = resp.status_code == 201
                if ok and len(self.users) < 500:
                    self.users.append(email)
            elif op == "login":
                resp = await c.post(
                    "/api/v1/auth/login",
                    json={"email": rng.choice(self.users), "password": PASSWORD},
                )
                ok = resp.status_code == 200
            elif op == "forgot_password":
                resp = await c.post(
                    "/api/v1/auth/forgot-password", json={"email": rng.choice(self.users)}
                )
                ok = resp.status_code == 202
            else:
                resp = await c.get("/api/v1/auth/me", headers=self._admin())
                ok = resp.status_code == 200
            if not ok:
                self.errors[f"{op}: HTTP {resp.status_code}"] += 1
        except httpx.HTTPError as exc:
            self.errors[f"{op}: {type(exc).__name__}"] += 1
        if record:
            self.latencies.append(time.monotonic() - due)
            self.by_op[op] += 1

    async def traffic(self, seconds: float, record: bool) -> float:
        rate = self.args.rate
        ops = [op for op, _ in MIX]
        weights = [w for _, w in MIX]
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        tasks: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(base_url=self.base, timeout=30, limits=limits) as c:
            start = time.monotonic()
            i = 0
            while True:
                due = start + i / rate
                if due - start >= seconds:
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -1.0:
                    self.late += 1
                op = random.choices(ops, weights)[0]
                t = asyncio.create_task(self.request(c, op, due, record))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                i += 1
            if tasks:
                await asyncio.gather(*tasks)
            return time.monotonic() - start

    # -- end state ---------------------------------------------------------------------------
    async def depth(self) -> tuple[int, int]:
        """(jobs queued/scheduled/retrying/running, unpublished outbox rows)."""
        stats = json.loads(self._cli("jobs", "stats", "--json"))
        jobs = stats["queued"] + stats["scheduled"] + stats["retrying"] + stats["running"]
        dsn = self.db_url.replace("postgresql+asyncpg://", "postgresql://")
        conn = await asyncpg.connect(dsn)
        try:
            outbox = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        finally:
            await conn.close()
        return int(jobs), int(outbox)

    async def dead_jobs(self) -> int:
        return int(json.loads(self._cli("jobs", "stats", "--json"))["dead"])

    async def teardown(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        conn = await asyncpg.connect(self.args.pg_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        finally:
            await conn.close()
        try:
            import redis

            r = redis.Redis.from_url(self.args.redis_url)
            for key in r.scan_iter(match=f"*arcana-soak-{self.run_id}*", count=1000):
                r.delete(key)
            r.close()
        except Exception as exc:  # cleanup only
            print(f"warning: redis cleanup failed: {exc}", file=sys.stderr)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of traffic")
    parser.add_argument("--rate", type=float, default=40, help="requests per second")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before measuring")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "ARCANA_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("ARCANA_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
    )
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else min(60.0, max(20.0, args.duration / 10))
    soak = Soak(args)
    failures: list[str] = []
    try:
        await soak.setup()
        await soak.traffic(warmup, record=False)
        rss_start = {name: rss_kib(p.pid) for name, p in soak.procs.items()}
        elapsed = await soak.traffic(args.duration, record=True)
        rss_end = {name: rss_kib(p.pid) for name, p in soak.procs.items()}
        drain_started = time.monotonic()
        jobs, outbox = await soak.depth()
        while (jobs or outbox) and time.monotonic() - drain_started < 120:
            await asyncio.sleep(1)
            jobs, outbox = await soak.depth()
        drain_seconds = time.monotonic() - drain_started
        dead = await soak.dead_jobs()
    finally:
        await soak.teardown()

    lat = sorted(soak.latencies)
    n = len(lat)
    errors = sum(soak.errors.values())
    print(
        f"\nArcana soak: {args.duration:.0f} s at {args.rate:.0f} req/s "
        f"(warm-up {warmup:.0f} s), serve + worker on PostgreSQL + Redis\n"
    )
    print("| metric | value |")
    print("|---|---|")
    print(f"| requests | {n} |")
    print(f"| throughput | {n / elapsed:.1f} req/s (target {args.rate:.0f}) |")
    for p in (50, 99, 99.9):
        print(f"| p{p:g} latency | {percentile(lat, p) * 1000:.1f} ms |")
    print(f"| p99 / p50 | {percentile(lat, 99) / percentile(lat, 50):.1f}x |")
    print(f"| errors | {errors} |")
    print(f"| requests started > 1 s late | {soak.late} |")
    for name in soak.procs:
        growth = (rss_end[name] - rss_start[name]) / max(rss_start[name], 1)
        print(
            f"| RSS {name} start / end | {rss_start[name] / 1024:.1f} MiB / "
            f"{rss_end[name] / 1024:.1f} MiB ({growth:+.1%}) |"
        )
        if growth >= 0.10:
            failures.append(f"RSS of {name} grew {growth:.1%}")
    print(
        f"| queue depth at end (jobs / outbox) | {jobs} / {outbox} "
        f"(drained in {drain_seconds:.1f} s) |"
    )
    print(f"| dead jobs | {dead} |")
    print("\nper operation: " + ", ".join(f"{k} {v}" for k, v in sorted(soak.by_op.items())))
    if soak.errors:
        print("errors: " + ", ".join(f"{k} x{v}" for k, v in soak.errors.most_common(10)))
        failures.append(f"{errors} errors")
    if jobs or outbox:
        failures.append("queue did not drain")
    if dead:
        failures.append(f"{dead} dead jobs")
    if failures:
        print("\nFAILED: " + "; ".join(failures))
        return 1
    print("\nOK: no errors, RSS growth < 10 %, queue drained")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
