"""Start-up of the ``arcana`` command: ``--help``, and a command up to its own work.

    make bench-cli            # or: .venv/bin/python bench/cli_startup.py --runs 7

Each row is the median of ``--runs`` runs, rows interleaved. ``wall`` is the whole process,
from the shell's point of view. ``before its own work`` is for ``users list``: from the
interpreter's start (the process's start time in ``/proc``) to the call of
``UserService.list_users``, the one call that is the command's own work; everything before it
(imports, settings, logging, building and starting the services, migrating an embedded
database) is start-up. The issue's targets: ``--help`` < 0.3 s, any command < 1 s before its
own work. Then the imports of a ``users list`` start, grouped by top-level package
(``python -X importtime``, self time; the tool's own overhead inflates the sum).

Embedded SQLite always; PostgreSQL when ``--database-url`` (an admin URL: a database of its
own is created and dropped) answers, and PostgreSQL with Redis (``--redis-url``, a key prefix
of its own) beside it.
"""

from __future__ import annotations

import loadgen  # first: it takes this folder off sys.path (see bench/loadgen.py)

# isort: split
import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ARCANA = str(loadgen.BIN / "arcana")

# Runs ``arcana users list`` in this interpreter and prints, on stderr, the seconds from the
# process's start to the command's own work (``UserService.list_users``).
TIMED = r"""
import os, sys, time
ticks = os.sysconf("SC_CLK_TCK")
with open("/proc/self/stat") as f:
    started = int(f.read().rsplit(")", 1)[1].split()[19]) / ticks
with open("/proc/uptime") as f:
    now_up = float(f.read().split()[0])
origin = time.monotonic() - (now_up - started)
import arcana.services.users as users
own = users.UserService.list_users
async def timed(self, *args, **kwargs):
    sys.stderr.write(f"\nBEFORE-OWN-WORK {time.monotonic() - origin:.4f}\n")
    return await own(self, *args, **kwargs)
users.UserService.list_users = timed
sys.argv = ["arcana", "users", "list"]
from arcana.cli import main
main()
"""


def wall(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def before_own_work(env: dict[str, str]) -> float:
    """``/proc``'s start time has clock-tick (10 ms) resolution; the median smooths it."""
    out = subprocess.run(
        [sys.executable, "-c", TIMED], env=env, check=True, capture_output=True, text=True
    ).stderr
    line = next(x for x in out.splitlines() if x.startswith("BEFORE-OWN-WORK "))
    return float(line.split()[1])


def imports(env: dict[str, str], top: int) -> list[tuple[str, float]]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", TIMED],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    by_package: dict[str, float] = {}
    for line in out.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if m:
            package = m.group(2).split(".")[0]
            by_package[package] = by_package.get(package, 0.0) + int(m.group(1)) / 1e6
    ranked = sorted(by_package.items(), key=lambda kv: -kv[1])
    return [*ranked[:top], ("(all)", sum(by_package.values()))]


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("+asyncpg", "", 1))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _forget(url: str, prefix: str) -> None:
    """The keys the commands left under ``prefix`` (the recorded layouts)."""
    from redis.asyncio import Redis

    redis = Redis.from_url(url)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument(
        "--database-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
        help="an admin URL of PostgreSQL ('' to skip it)",
    )
    ap.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/14",
        help="Redis for the PostgreSQL + Redis rows ('' to skip them)",
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="arcana-cli-"))
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ARCANA_VAR_DIR": str(work / "var"),
        "ARCANA_JWT_SECRET": loadgen.SECRET,
    }
    backends = {"embedded": {**base, "ARCANA_DATABASE_URL": f"sqlite+aiosqlite:///{work}/a.db"}}
    pg_db = f"arcana_cli_{uuid.uuid4().hex[:8]}"
    if args.database_url:
        try:
            asyncio.run(_admin(args.database_url, f"CREATE DATABASE {pg_db}"))
        except Exception as exc:  # any failure (refused, no such role...): skip the backend
            print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
        else:
            url = args.database_url.rsplit("/", 1)[0] + f"/{pg_db}"
            backends["PostgreSQL"] = {**base, "ARCANA_DATABASE_URL": url}
            if args.redis_url:
                backends["PostgreSQL + Redis"] = {
                    **backends["PostgreSQL"],
                    "ARCANA_REDIS_URL": args.redis_url,
                    "ARCANA_REDIS_PREFIX": f"bench-cli-{uuid.uuid4().hex[:8]}",
                }
    try:
        for name, env in backends.items():  # migrated once, so no row below pays for it
            if name != "PostgreSQL + Redis":  # the same database as "PostgreSQL"
                subprocess.run([ARCANA, "migrate"], env=env, check=True, capture_output=True)
        rows: dict[str, list[float]] = {"arcana --help (wall)": []}
        for name in backends:
            rows[f"arcana users list, {name} (wall)"] = []
            rows[f"arcana users list, {name}: before its own work"] = []
        for _ in range(args.runs):
            rows["arcana --help (wall)"].append(wall([ARCANA, "--help"], base))
            for name, env in backends.items():
                rows[f"arcana users list, {name} (wall)"].append(
                    wall([ARCANA, "users", "list"], env)
                )
                rows[f"arcana users list, {name}: before its own work"].append(before_own_work(env))
        print(f"\n{args.runs} runs each, interleaved, medians (min-max)")
        print("| command | seconds | min-max | target |")
        print("|---|---:|---:|---|")
        for row, values in rows.items():
            target = "< 0.3" if "--help" in row else "< 1" if "before" in row else ""
            print(
                f"| {row} | {statistics.median(values):.3f} | "
                f"{min(values):.3f}-{max(values):.3f} | {target} |"
            )
        name = next(n for n in ("PostgreSQL + Redis", "PostgreSQL", "embedded") if n in backends)
        env = backends[name]
        print(f"\nimports of `arcana users list` ({name}), self time by top-level package:")
        print("| package | seconds |")
        print("|---|---:|")
        for package, seconds in imports(env, 14):
            print(f"| {package} | {seconds:.3f} |")
    finally:
        if "PostgreSQL" in backends:
            asyncio.run(_admin(args.database_url, f"DROP DATABASE IF EXISTS {pg_db}"))
        if "PostgreSQL + Redis" in backends:
            asyncio.run(
                _forget(args.redis_url, backends["PostgreSQL + Redis"]["ARCANA_REDIS_PREFIX"])
            )


if __name__ == "__main__":
    main()
