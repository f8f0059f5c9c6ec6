# ruff: noqa: E402  (sys.path is cleaned before the imports)
"""Cost of one ``POST /api/v1/products/{id}/stock``, counted, not timed.

    .venv/bin/python bench/stock.py                                  # embedded SQLite
    .venv/bin/python bench/stock.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/DB
    .venv/bin/python bench/stock.py --callgrind                      # + instructions (valgrind)
    .venv/bin/python bench/stock.py --profile                        # + cProfile, top functions

In-process: the whole ASGI app (middleware, routing, the bearer check, the route, the service,
the store) driven with bare ASGI messages (``--client httpx``: through ``httpx.ASGITransport``,
whose own work is then counted too), ``--concurrency`` requests in flight, the
relay and the job worker off, +1/-1 alternating on one row with stock far from 0
(``--spread N``: +1 on each of N rows in a fixed shuffled order, as bench-http's spread
scenario, to see whether anything costs more per product than on one hot row). It prints:

- PostgreSQL (``--database-url``): round trips per change, counted on the wire by a proxy in
  front of the server (``tests/pg_wire.py``: one ``ReadyForQuery`` per round trip), with the
  simple-protocol statements (``BEGIN``/``COMMIT``) and the prepared-statement executions
  (``--no-wire``: no proxy; it runs in this process, so ``--callgrind`` counts its work too);
- ``--callgrind``: instructions per change, every thread of the process counted, under
  ``valgrind --tool=callgrind`` with instrumentation on only around the counted requests (the
  helper of ``bench/tracing.py``), so the figure does not depend on the machine's load.

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
import random
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx

from arcana.adapters.database import Database
from arcana.adapters.migrator import migrate
from arcana.api.app import create_app
from arcana.config import Settings
from arcana.domain.products import NewProduct, ProductQuery, ProductStatus
from arcana.lifecycle import Lifecycle
from tests.conftest import insert_principals, truncate_all
from tests.pg_wire import WireCounter, WireCounts
from tests.products_support import admin_headers

_HELPER_C = """
#include <valgrind/callgrind.h>
void bench_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void bench_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
"""


def settings_for(folder: Path, database_url: str | None, **more: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        database_url=database_url or f"sqlite+aiosqlite:///{folder / 'arcana.db'}",
        var_dir=folder / "var",
        jwt_secret="bench-secret-" + "x" * 40,
        log_json=True,
        log_level="WARNING",
        grpc_port=0,
        **more,
    )


async def run(
    folder: Path,
    database_url: str | None,
    n: int,
    concurrency: int,
    counted: Any,
    client: str = "asgi",
    spread: int = 1,
    wire: bool = True,
) -> WireCounts | None:
    proxy: WireCounter | None = None
    url = database_url
    if database_url is not None:
        db = Database(settings_for(folder, database_url))
        await migrate(db)
        await db.dispose()
        await truncate_all(database_url)
    if database_url is not None and wire:
        parts = urlsplit(database_url)
        proxy = await WireCounter(parts.hostname or "127.0.0.1", parts.port or 5432).__aenter__()
        url = f"postgresql+asyncpg://{parts.username}@127.0.0.1:{proxy.port}{parts.path}"
        url += "?ssl=disable"
    process = Lifecycle.build(settings_for(folder, url))
    await process.start()
    # As under ``arcana serve``, whose relay these commits wake in-process, so they send no
    # NOTIFY (``Database.notifies_outbox``); the relay itself stays off, as said above.
    process.app.db.local_relay = True
    try:
        c = process.app
        await insert_principals(c)
        p = await c.products.create(
            "admin-1", NewProduct(name="Bench", price=Decimal("9.99"), stock=1_000_000)
        )
        headers = admin_headers(c)
        app = create_app(c)
        if spread > 1:
            # +1 on each of ``spread`` products in a fixed shuffled order (bench-http's
            # spread scenario), far from every stock bound.
            ids = await _spread_products(c, spread)
            sent = [(f"/api/v1/products/{i}/stock", b'{"quantity_change":1}') for i in ids]
        else:
            target = f"/api/v1/products/{p.id}/stock"
            sent = [(target, b'{"quantity_change":1}'), (target, b'{"quantity_change":-1}')]
        post = _httpx_post(app, headers) if client == "httpx" else _asgi_post(app, headers)
        done = 0

        async def changes(count: int) -> None:
            nonlocal done
            for start in range(done, done + count, concurrency):
                end = min(done + count, start + concurrency)
                await asyncio.gather(*(post(*sent[i % len(sent)]) for i in range(start, end)))
            done += count

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


async def _spread_products(c: Any, count: int) -> list[str]:
    await c.products.create_many(
        [
            NewProduct(name=f"Spread {i}", price=Decimal("1.00"), stock=1_000_000)
            for i in range(count)
        ],
        ProductStatus.ACTIVE,
    )
    ids: list[str] = []
    for page in range(0, count // 100 + 1):
        listed = await c.products.list_products(ProductQuery.build(page=page, size=100))
        ids += [item.id for item in listed.items if item.name.startswith("Spread ")]
    random.Random(16).shuffle(ids)
    return ids


Post = Callable[[str, bytes], Awaitable[None]]


def _httpx_post(app: Any, headers: dict[str, str]) -> Post:
    """Through ``httpx.ASGITransport``: its client-side work is counted too."""
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
    sent = {**headers, "content-type": "application/json"}

    async def post(target: str, body: bytes) -> None:
        r = await http.post(target, content=body, headers=sent)
        assert r.status_code == 200, r.text

    return post


def _asgi_post(app: Any, headers: dict[str, str]) -> Post:
    """The ASGI messages a server would hand the app, and nothing else: what is counted is
    the app's work (and the database's, on this process's threads)."""
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw_headers.append((b"content-type", b"application/json"))

    async def post(target: str, body: bytes) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": target,
            "raw_path": target.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [*raw_headers, (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        assert status == [200], status

    return post


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
                args.client,
                args.spread,
                not args.no_wire,
            )
        )
    if counts is not None:
        n = args.requests
        print(
            f"round trips per change: {counts.round_trips / n:.2f} "
            f"(prepared-statement executions {counts.executes / n:.2f}, "
            f"parses {counts.parses / n:.2f}, simple queries {len(counts.queries) / n:.2f}: "
            f"{sorted(set(counts.queries))}; connections opened {counts.connections})"
        )
    if profile is not None:
        if args.profile_out:
            profile.dump_stats(args.profile_out)
        stats = pstats.Stats(profile)
        stats.sort_stats("tottime").print_stats(args.profile)


def callgrind_total(
    script: str, child_args: list[str], keep: str | None, name: str
) -> tuple[str, int]:
    """Run ``script --child-helper LIB *child_args`` under callgrind, instrumentation on only
    where the child turns it on (``Counted``): the child's stdout and the instructions counted.
    ``bench/login.py`` uses it too."""
    with tempfile.TemporaryDirectory() as tmp:
        source, lib = Path(tmp) / "cg.c", Path(tmp) / "libbenchcg.so"
        source.write_text(_HELPER_C)
        subprocess.run(
            [os.environ.get("CC", "cc"), "-O1", "-shared", "-fPIC", "-o", str(lib), str(source)],
            check=True,
        )
        out = Path(keep or tmp) / f"callgrind.{name}.{os.getpid()}"
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            script,
            "--child-helper",
            str(lib),
            *child_args,
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
        for line in out.read_text().splitlines():
            if line.startswith("totals:"):
                return proc.stdout, int(line.split()[1])
        raise SystemExit(f"no totals in {out}")


def callgrind(args: argparse.Namespace) -> None:
    child_args = ["--requests", str(args.requests), "--concurrency", str(args.concurrency)]
    child_args += ["--client", args.client, "--spread", str(args.spread)]
    if args.no_wire:
        child_args.append("--no-wire")
    if args.database_url:
        child_args += ["--database-url", args.database_url]
    output, total = callgrind_total(__file__, child_args, args.keep, "stock")
    print(output, end="")
    print(f"instructions per change (callgrind): {total / args.requests / 1e6:.2f} M")


def add_counting_arguments(ap: argparse.ArgumentParser) -> None:
    """The options this script shares with ``bench/login.py``."""
    ap.add_argument("--database-url", help="postgresql+asyncpg://… (default: embedded SQLite)")
    ap.add_argument(
        "--client",
        choices=("asgi", "httpx"),
        default="asgi",
        help="asgi: bare ASGI messages (the app's work only); httpx: through httpx.ASGITransport",
    )
    ap.add_argument("--callgrind", action="store_true", help="count instructions (valgrind)")
    ap.add_argument("--profile", type=int, default=0, help="cProfile: print the top N functions")
    ap.add_argument("--profile-out", help="--profile: also write the pstats file here")
    ap.add_argument("--keep", help="--callgrind: keep the callgrind.* file in this folder")
    ap.add_argument("--child-helper", help=argparse.SUPPRESS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000, help="changes counted")
    ap.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    ap.add_argument(
        "--spread",
        type=int,
        default=1,
        help="N > 1: +1 on each of N products in a fixed shuffled order (default: +1/-1 on one)",
    )
    ap.add_argument(
        "--no-wire",
        action="store_true",
        help="PostgreSQL: no round-trip counting proxy (it runs in this process, so its own "
        "work would be counted with the app's)",
    )
    add_counting_arguments(ap)
    args = ap.parse_args()
    if args.callgrind:
        callgrind(args)
    else:
        child(args, args.child_helper)


if __name__ == "__main__":
    main()
