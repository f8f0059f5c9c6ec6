# ruff: noqa: E402  (sys.path is cleaned before the imports)
"""Cost of one ``POST /api/v1/products/{id}/stock``, counted, not timed.

    .venv/bin/python bench/stock.py                                  # embedded SQLite
    .venv/bin/python bench/stock.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/DB
    .venv/bin/python bench/stock.py --callgrind                      # + instructions (valgrind)
    .venv/bin/python bench/stock.py --profile                        # + cProfile, top functions

In-process: the whole ASGI app (middleware, routing, the bearer check, the route, the service,
the store) driven through ``httpx.ASGITransport``, ``--concurrency`` requests in flight, the
relay and the job worker off, +1/-1 alternating on one row with stock far from 0. It prints:

- PostgreSQL (``--database-url``): round trips per change, counted on the wire by a proxy in
  front of the server (``tests/pg_wire.py``: one ``ReadyForQuery`` per round trip), with the
  simple-protocol statements (``BEGIN``/``COMMIT``) and the prepared-statement executions;
- ``--callgrind``: instructions per change, every thread of the process counted, under
  ``valgrind --tool=callgrind`` with instrumentation on only around the counted requests (the
  helper of ``bench/tracing.py``), so the figure does not depend on the machine's load. The
  httpx client's own work is in it too (the same before and after).

The database named in ``--database-url`` must exist; it is migrated and its tables emptied.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))  # for tests.pg_wire and the test principals

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import subprocess
import tempfile
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx

from arcana.adapters.database import Database
from arcana.adapters.migrator import migrate
from arcana.api.app import create_app
from arcana.config import Settings
from arcana.domain.products import NewProduct
from arcana.lifecycle import Lifecycle
from tests.conftest import insert_principals, truncate_all
from tests.pg_wire import WireCounter, WireCounts
from tests.products_support import admin_headers

_HELPER_C = """
#include <valgrind/callgrind.h>
void bench_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void bench_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
"""


def settings_for(folder: Path, database_url: str | None) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        database_url=database_url or f"sqlite+aiosqlite:///{folder / 'arcana.db'}",
        var_dir=folder / "var",
        jwt_secret="bench-secret-" + "x" * 40,
        log_json=True,
        log_level="WARNING",
        grpc_port=0,
    )


async def run(
    folder: Path, database_url: str | None, n: int, concurrency: int, counted: Any
) -> WireCounts | None:
    proxy: WireCounter | None = None
    url = database_url
    if database_url is not None:
        db = Database(settings_for(folder, database_url))
        await migrate(db)
        await db.dispose()
        await truncate_all(database_url)
        parts = urlsplit(database_url)
        proxy = await WireCounter(parts.hostname or "127.0.0.1", parts.port or 5432).__aenter__()
        url = f"postgresql+asyncpg://{parts.username}@127.0.0.1:{proxy.port}{parts.path}"
        url += "?ssl=disable"
    process = Lifecycle.build(settings_for(folder, url))
    await process.start()
    try:
        c = process.app
        await insert_principals(c)
        p = await c.products.create(
            "admin-1", NewProduct(name="Bench", price=Decimal("9.99"), stock=1_000_000)
        )
        headers = admin_headers(c)
        transport = httpx.ASGITransport(app=create_app(c))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            target = f"/api/v1/products/{p.id}/stock"
            bodies = [{"quantity_change": 1}, {"quantity_change": -1}]

            async def changes(count: int) -> None:
                async def one(i: int) -> None:
                    r = await http.post(target, json=bodies[i % 2], headers=headers)
                    assert r.status_code == 200, r.text

                for start in range(0, count, concurrency):
                    await asyncio.gather(
                        *(one(i) for i in range(start, min(count, start + concurrency)))
                    )

            await changes(200)  # warm the code paths, the pool and the prepared statements
            if proxy is not None:
                proxy.reset()
            with counted:
                await changes(n)
            return proxy.reset() if proxy is not None else None
    finally:
        await process.stop()
        if proxy is not None:
            await proxy.__aexit__(None, None, None)


class Counted:
    """Instrumentation on for the ``with`` block only (``helper`` None: nothing)."""

    def __init__(self, helper: str | None, profile: cProfile.Profile | None = None) -> None:
        import ctypes

        self._lib = ctypes.CDLL(helper) if helper else None
        self._profile = profile

    def __enter__(self) -> None:
        gc.collect()
        gc.freeze()
        if self._lib is not None:
            self._lib.bench_start()
        if self._profile is not None:
            self._profile.enable()

    def __exit__(self, *exc: object) -> None:
        if self._profile is not None:
            self._profile.disable()
        if self._lib is not None:
            self._lib.bench_stop()


def child(args: argparse.Namespace, helper: str | None) -> None:
    profile = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory() as tmp:
        counts = asyncio.run(
            run(
                Path(tmp),
                args.database_url,
                args.requests,
                args.concurrency,
                Counted(helper, profile),
            )
        )
    if counts is not None:
        n = args.requests
        print(
            f"round trips per change: {counts.round_trips / n:.2f} "
            f"(prepared-statement executions {counts.executes / n:.2f}, "
            f"parses {counts.parses / n:.2f}, simple queries {len(counts.queries) / n:.2f}: "
            f"{sorted(set(counts.queries))})"
        )
    if profile is not None:
        stats = pstats.Stats(profile)
        stats.sort_stats("tottime").print_stats(args.profile)


def callgrind(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source, lib = Path(tmp) / "cg.c", Path(tmp) / "libbenchcg.so"
        source.write_text(_HELPER_C)
        subprocess.run(
            [os.environ.get("CC", "cc"), "-O1", "-shared", "-fPIC", "-o", str(lib), str(source)],
            check=True,
        )
        out = Path(args.keep or tmp) / f"callgrind.stock.{os.getpid()}"
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--child-helper",
            str(lib),
            "--requests",
            str(args.requests),
            "--concurrency",
            str(args.concurrency),
        ]
        if args.database_url:
            cmd += ["--database-url", args.database_url]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
        print(proc.stdout, end="")
        for line in out.read_text().splitlines():
            if line.startswith("totals:"):
                total = int(line.split()[1])
                print(f"instructions per change (callgrind): {total / args.requests / 1e6:.2f} M")
                return
        raise SystemExit(f"no totals in {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--database-url", help="postgresql+asyncpg://… (default: embedded SQLite)")
    ap.add_argument("--requests", type=int, default=1000, help="changes counted")
    ap.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    ap.add_argument("--callgrind", action="store_true", help="count instructions (valgrind)")
    ap.add_argument("--profile", type=int, default=0, help="cProfile: print the top N functions")
    ap.add_argument("--keep", help="--callgrind: keep the callgrind.* file in this folder")
    ap.add_argument("--child-helper", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.callgrind:
        callgrind(args)
    else:
        child(args, args.child_helper)


if __name__ == "__main__":
    main()
