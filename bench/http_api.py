"""HTTP benchmark of the product catalog against two ceilings, side by side in one run.

    make bench-http            # or: .venv/bin/python bench/http_api.py --rounds 3 --duration 5

One ``arcana serve`` process (embedded: SQLite + in-process cache, default settings) with
100 000 products from ``arcana demo-data``, a bare FastAPI and a bare Starlette server (same
uvicorn settings) returning the same product JSON from memory. Every scenario runs ``--rounds``
times, interleaved, at 64 connections; the table shows medians and ratios to the ceilings.
Also measured: ``GET /auth/me`` with an admin's bearer (token check + one row), and stock
changes each followed by a read of the first list page, from which the cost of a first read
after a write is derived (``print_first_read``). With wrk,
``server CPU µs/req`` is the CPU time (user + system, every process) the server under test
spent per answered request: its own cost, unlike req/s whatever shares the cores.

``--database-url`` runs it on PostgreSQL (an empty database: it refuses one that holds
products); ``--redis-url`` in Redis mode, where ``--workers N`` starts
``arcana serve --workers N`` (run it with 1 and with 2 to compare).
"""

from __future__ import annotations

import loadgen  # first: it takes this folder off sys.path (see bench/loadgen.py)

# isort: split
import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from loadgen import (
    BIN,
    Result,
    free_port,
    have_wrk,
    median_result,
    run_python,
    run_wrk_measured,
    wait_http,
    wrk_cycle_lua,
)

AFTER_WRITE = "POST /products/{id}/stock (1000 rows), each then GET /products?size=10"


def print_first_read(med: dict[str, Result], fast: float, writes_alone: str) -> None:
    """The first read after a write, from two rows of the same run.

    A read can only be the first after a write if writes come as often as reads, so this
    scenario's rate is mostly the writes'. What a read adds is the difference: a pair (a
    change, then a read) takes ``2 / rate`` of the machine, the change alone ``1 / rate`` of
    the writes-only scenario; the rest is the read, whose rate alone is its inverse."""
    pair = 2 / med[AFTER_WRITE].rps
    write = 1 / med[writes_alone].rps
    if pair <= write:
        print("\nfirst read after a write: not measurable in this run (pairs as fast as writes)")
        return
    read = 1 / (pair - write)
    print(
        f"\nfirst read after a write (derived: a pair's time less a write's, same run): "
        f"{read:,.0f} reads/s, {read / fast:.2f}x bare FastAPI"
    )


def products_stored(url: str) -> int:
    """How many products the database at ``url`` holds (after ``arcana migrate``)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def count() -> int:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return int((await conn.execute(text("SELECT count(*) FROM products"))).scalar_one())
        finally:
            await engine.dispose()

    return asyncio.run(count())


def admin_token(env: dict[str, str], work: Path, base: str) -> str:
    """A stored admin (access tokens of unknown users are refused) and its access token."""
    password = "Bench-Admin-42"
    subprocess.run(
        [
            str(BIN / "arcana"),
            "users",
            "create",
            "--email",
            "bench-admin@example.com",
            "--name",
            "Bench admin",
            "--admin",
            "--password-stdin",
        ],
        input=password + "\n",
        text=True,
        env=env,
        cwd=work,
        capture_output=True,
        check=True,
    )
    r = httpx.post(
        f"{base}/api/v1/auth/login",
        json={"email": "bench-admin@example.com", "password": password},
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per scenario and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    ap.add_argument("--json", action="store_true", help="also print the medians as JSON")
    ap.add_argument(
        "--redis-url",
        default=None,
        help="run Arcana in Redis mode (cache shared by its processes); needed by --workers > 1",
    )
    ap.add_argument("--workers", type=int, default=1, help="arcana serve --workers N (default 1)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="arcana-bench-"))
    port = free_port()
    env = loadgen.arcana_env(work, port, database_url=args.database_url)
    if args.redis_url:
        env["ARCANA_REDIS_URL"] = args.redis_url
        env["ARCANA_REDIS_PREFIX"] = f"arcana-bench-{os.getpid()}"
    elif args.workers > 1:
        ap.error("--workers > 1 needs --redis-url (embedded mode is one process)")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        print(f"filling {args.rows} products ...", flush=True)
        subprocess.run(
            [str(BIN / "arcana"), "migrate"], env=env, cwd=work, check=True, capture_output=True
        )
        if args.database_url and (stored := products_stored(args.database_url)):
            raise SystemExit(
                f"--database-url already holds {stored} products (and perhaps the bench admin): "
                "the benchmark needs an empty database, e.g. dropdb and createdb it first"
            )
        loadgen.demo_data(env, work, args.rows)
        base = loadgen.start_serve(env, work, procs, "--workers", str(args.workers))
        pid = loadgen.first_product_id(base)
        body = httpx.get(f"{base}/api/v1/products/{pid}").content
        (work / "product.json").write_bytes(body)
        token = admin_token(env, work, base)
        # Enough stock that the alternating +1/-1 of the stock scenario never hits 0 (a 422).
        r = httpx.patch(
            f"{base}/api/v1/products/{pid}",
            json={"stock": 1_000_000},
            headers={"Authorization": f"Bearer {token}"},
        )
        r.raise_for_status()
        body = httpx.get(f"{base}/api/v1/products/{pid}").content
        (work / "product.json").write_bytes(body)
        bare: dict[str, str] = {}
        server_pid = {base: procs[-1].pid}
        for kind in ("starlette", "fastapi"):
            bport = free_port()
            p = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).parent / "bare.py"),
                    kind,
                    str(bport),
                    str(work / "product.json"),
                ]
            )
            procs.append(p)
            bare[kind] = f"http://127.0.0.1:{bport}/bare/{pid}"
            server_pid[bare[kind]] = p.pid
            wait_http(bare[kind], p)
        writes = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        # +1 and -1 in turn on one row.
        stock_lua = wrk_cycle_lua(
            "POST", writes, [(None, '{"quantity_change": 1}'), (None, '{"quantity_change": -1}')]
        )
        me_lua = f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        # Stock changes spread over 1,000 products (+1 each, so none can hit a bound).
        spread: list[str] = []
        for page in range(10):
            listed = httpx.get(f"{base}/api/v1/products?size=100&page={page}").json()["data"]
            spread += [item["id"] for item in listed]
        # +1 on each of them in a shuffled order, fixed from run to run.
        random.Random(16).shuffle(spread)
        spread_lua = wrk_cycle_lua(
            "POST",
            writes,
            [(f"/api/v1/products/{i}/stock", '{"quantity_change": 1}') for i in spread],
        )
        # The same changes, each followed by a read of the first list page: every write
        # retires the cached pages, so each read is a first read after a write (concurrent
        # ones share one build, as they would in service).
        list_path = "/api/v1/products?size=10"
        after_write_lua = wrk_cycle_lua(
            "POST",
            writes,
            [
                request
                for i in spread
                for request in (
                    (f"/api/v1/products/{i}/stock", '{"quantity_change": 1}'),
                    (list_path, None),
                )
            ],
        )
        scenarios: list[tuple[str, str, str | None]] = [
            ("bare Starlette (memory)", bare["starlette"], None),
            ("bare FastAPI (memory)", bare["fastapi"], None),
            ("GET /products/{id} cached", f"{base}/api/v1/products/{pid}", None),
            (f"GET /products?size=10 ({args.rows} rows)", f"{base}/api/v1/products?size=10", None),
            ("POST /products/{id}/stock", f"{base}/api/v1/products/{pid}/stock", stock_lua),
            ("GET /auth/me (bearer + one row)", f"{base}/api/v1/auth/me", me_lua),
        ]
        use_wrk = have_wrk()
        if use_wrk:  # one URL per request needs wrk's Lua
            scenarios.insert(
                5,
                (
                    f"POST /products/{{id}}/stock ({len(spread)} rows)",
                    f"{base}/api/v1/products/{pid}/stock",
                    spread_lua,
                ),
            )
            scenarios.insert(6, (AFTER_WRITE, f"{base}{list_path}", after_write_lua))
        print(
            f"load generator: {'wrk' if use_wrk else 'python httpx'}; "
            f"{args.connections} connections, {args.rounds} rounds x {args.duration}s; "
            f"arcana serve --workers {args.workers}"
            f"{' (Redis mode)' if args.redis_url else ' (embedded)'}",
            flush=True,
        )
        results: dict[str, list[Result]] = {name: [] for name, _, _ in scenarios}
        settling = 0.0
        for _ in range(args.rounds):
            for name, url, lua in scenarios:
                settling += loadgen.wait_outbox_drained(env)
                if use_wrk:
                    owner = server_pid.get(url, server_pid[base])
                    r = run_wrk_measured(owner, url, args.duration, args.connections, lua)
                elif lua is None:
                    r = run_python(url, args.duration, args.connections)
                elif lua is me_lua:
                    r = run_python(
                        url,
                        args.duration,
                        args.connections,
                        headers={"Authorization": f"Bearer {token}"},
                    )
                else:
                    r = run_python(
                        url,
                        args.duration,
                        args.connections,
                        "POST",
                        '{"quantity_change": 0}',
                        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                    )
                results[name].append(r)
        med = {name: median_result(rs) for name, rs in results.items()}
        fast = med["bare FastAPI (memory)"].rps
        star = med["bare Starlette (memory)"].rps
        header = (
            "| scenario | req/s | p50 ms | p99 ms | vs FastAPI | vs Starlette "
            "| server CPU µs/req | non-2xx / timeouts |"
        )
        print()
        print(header)
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, r in med.items():
            cpu = f"{r.cpu_us:,.0f}" if r.cpu_us is not None else "-"
            print(
                f"| {name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                f"{r.rps / fast:.2f} | {r.rps / star:.2f} | {cpu} | {r.errors} / {r.timeouts} |"
            )
        if AFTER_WRITE in med:
            print_first_read(med, fast, f"POST /products/{{id}}/stock ({len(spread)} rows)")
        print(
            f"\nEach scenario started with the outbox relayed (waited {settling:.1f} s in all "
            "for the relay to catch up after the write scenarios)."
        )
        if args.json:
            print(json.dumps({k: vars(v) for k, v in med.items()}))
    finally:
        loadgen.stop_processes(procs)
        shutil.rmtree(work, ignore_errors=True)
        if args.redis_url:
            import redis

            r = redis.Redis.from_url(args.redis_url)
            keys = list(r.scan_iter(match=f"{env['ARCANA_REDIS_PREFIX']}:*", count=1000))
            for i in range(0, len(keys), 500):
                r.delete(*keys[i : i + 500])


if __name__ == "__main__":
    main()
