# ruff: noqa: E402  (sys.path is cleaned before the imports)
"""Round trips and instructions of ``GET /api/v1/auth/me``, counted (not timed).

    .venv/bin/python bench/auth_me.py                            # SQLite file, no Redis
    .venv/bin/python bench/auth_me.py --database-url postgresql+asyncpg://postgres@127.0.0.1/DB
    .venv/bin/python bench/auth_me.py --database-url postgresql+asyncpg://... \
        --redis-url redis://127.0.0.1:6379/12
    .venv/bin/python bench/auth_me.py --callgrind                # + instructions per request
    .venv/bin/python bench/auth_me.py --callgrind --client asgi  # the app's work only
    .venv/bin/python bench/auth_me.py --profile tottime          # cProfile of the requests
    .venv/bin/python bench/auth_me.py --serve 3                  # server CPU per request

The app runs in-process (``create_app`` over a started process, all middleware) behind
``httpx.ASGITransport``. One user logs in once; then:

- ``sequential``: ``--requests`` requests one at a time. Per request it prints what reached the
  database and Redis: statements the driver ran (``SELECT``, and ``BEGIN`` / ``COMMIT`` /
  ``ROLLBACK`` round trips, counted in asyncpg's ``Transaction``, ``Connection`` and
  ``PreparedStatement.fetch``), new connections, pool checkouts,
  SQLite driver hops (aiosqlite's thread and the reader threads), Redis commands.
- ``concurrent`` (PostgreSQL): ``--concurrency`` clients, each sending ``--rounds`` requests
  one after the other: the same counts plus how many new connections the pool opened after
  a first burst had opened them (each one churn: an overflow connection closed on check-in
  and opened again), and the most checkouts granted to other requests while one request
  waited (first come, first served keeps it below the number of clients).

``--serve N`` measures a real ``arcana serve`` instead: ``wrk -t1 -c16`` (``--connections``) on
``/auth/me`` with an admin's bearer, 2 s of warm-up, then N runs of 5 s, each printing requests
per second and the server's CPU time (user + system, from ``/proc``) per request, then the
medians.

``--callgrind`` re-runs the sequential part under ``valgrind --tool=callgrind`` (instrumentation
on only around the counted requests, as in ``bench/tracing.py``) and prints instructions per
request, the whole process counted (the httpx client and every thread included).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import collections
import contextlib
import cProfile
import importlib.util
import os
import pstats
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from arcana.api.app import create_app
from arcana.config import Settings
from arcana.lifecycle import Lifecycle

PASSWORD = "Bench-Passw0rd-123"
COUNTS: collections.Counter[str] = collections.Counter()


def _count(name: str, owner: Any, attr: str) -> None:
    original = getattr(owner, attr)

    if asyncio.iscoroutinefunction(original):

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            COUNTS[name] += 1
            return await original(*args, **kwargs)

        setattr(owner, attr, async_wrapper)
    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            COUNTS[name] += 1
            return original(*args, **kwargs)

        setattr(owner, attr, wrapper)


def instrument(process: Lifecycle) -> None:
    """Count what leaves the process, at the drivers (see the module doc)."""
    from sqlalchemy import event

    db = process.app.infra.db
    engine = db.engine.sync_engine

    @event.listens_for(engine, "before_cursor_execute")
    def _statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        COUNTS["sql " + statement.split(None, 1)[0].upper()] += 1

    @event.listens_for(engine.pool, "checkout")
    def _checkout(*args: Any) -> None:
        COUNTS["pool checkout"] += 1

    @event.listens_for(engine.pool, "connect")
    def _connect(*args: Any) -> None:
        COUNTS["new connection"] += 1

    if db.is_sqlite:
        import aiosqlite

        _count("aiosqlite hop", aiosqlite.Connection, "_execute")
        if db.sqlite_reads is not None:
            _count("reader-thread hop", type(db.sqlite_reads), "_execute")
            reader_engine = db.sqlite_reads._engine  # the reader threads' own engine
            event.listen(reader_engine, "before_cursor_execute", _statement)
    else:
        import asyncpg

        _count("pg BEGIN", asyncpg.transaction.Transaction, "start")
        _count("pg COMMIT", asyncpg.transaction.Transaction, "commit")
        _count("pg ROLLBACK", asyncpg.transaction.Transaction, "rollback")
        _count("pg prepare", asyncpg.connection.Connection, "prepare")
        _count("pg execute prepared", asyncpg.prepared_stmt.PreparedStatement, "fetch")
        for name in ("execute", "fetch", "fetchrow", "fetchval"):  # pings, SET, ...
            _count(f"pg {name}", asyncpg.connection.Connection, name)
    redis = process.app.infra.redis
    if redis is not None:
        _count("redis command", type(redis), "execute_command")


def settings_for(args: argparse.Namespace, folder: Path) -> Settings:
    url = args.database_url or f"sqlite+aiosqlite:///{folder / 'arcana.db'}"
    values: dict[str, Any] = {
        "env": "test",
        "database_url": url,
        "var_dir": folder / "var",
        "jwt_secret": "bench-secret-" + "x" * 40,
        "log_json": True,
        "log_level": "WARNING",
        "grpc_port": 0,
        "argon2_memory_kib": 1024,
        "argon2_time_cost": 1,
    }
    if args.redis_url:
        values["redis_url"] = args.redis_url
        values["redis_prefix"] = f"bench-auth-me-{os.getpid()}"
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def start(args: argparse.Namespace, folder: Path) -> tuple[Lifecycle, httpx.AsyncClient]:
    settings = settings_for(args, folder)
    if not settings.is_sqlite:
        from arcana.adapters.database import Database
        from arcana.adapters.migrator import migrate

        db = Database(settings)
        await migrate(db)
        await db.dispose()
    process = Lifecycle.build(settings)
    await process.start()
    email = f"me-{os.getpid()}@example.com"
    if await process.app.users.get_user_by_email(email) is None:
        await process.app.users.create_user(email, "Bench", PASSWORD)
    transport = httpx.ASGITransport(app=create_app(process.app))
    http = httpx.AsyncClient(transport=transport, base_url="http://bench")
    r = await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    r.raise_for_status()
    http.headers["authorization"] = f"Bearer {r.json()['access_token']}"
    return process, http


def show(title: str, requests: int) -> None:
    print(f"{title}: {requests} requests, per request:")
    for name, n in sorted(COUNTS.items()):
        print(f"  {name:<22}{n / requests:>8.2f}")


async def counts(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        process, http = await start(args, Path(tmp))
        try:
            for _ in range(50):  # warm the caches (statements, verified token, token state)
                assert (await http.get("/api/v1/auth/me")).status_code == 200
            instrument(process)
            COUNTS.clear()
            for _ in range(args.requests):
                r = await http.get("/api/v1/auth/me")
                assert r.status_code == 200, r.text
            show("sequential", args.requests)
            if process.app.infra.db.is_sqlite:
                return
            pool = process.app.infra.db.engine.sync_engine.pool
            granted = overtaken_max = 0
            original = pool._do_get  # type: ignore[attr-defined]

            def do_get() -> Any:
                # "overtaken": checkouts granted to others while this one waited (FIFO: at
                # most the number of tasks that were waiting before it).
                nonlocal granted, overtaken_max
                before = granted
                record = original()
                overtaken_max = max(overtaken_max, granted - before)
                granted += 1
                return record

            pool._do_get = do_get  # type: ignore[attr-defined]
            statuses: collections.Counter[int] = collections.Counter()

            async def client() -> None:
                for _ in range(args.rounds):
                    statuses[(await http.get("/api/v1/auth/me")).status_code] += 1

            # Steady load, as a load generator gives it: each of the clients sends its next
            # request as soon as the last one is answered. A first burst opens the
            # connections, so what is counted after it is churn.
            await asyncio.gather(*(http.get("/api/v1/auth/me") for _ in range(args.concurrency)))
            COUNTS.clear()
            granted = overtaken_max = 0
            await asyncio.gather(*(client() for _ in range(args.concurrency)))
            n = args.rounds * args.concurrency
            show(
                f"concurrent ({args.concurrency} clients x {args.rounds} requests; "
                f"statuses {dict(statuses)})",
                n,
            )
            print(f"  most checkouts granted to others while one waited: {overtaken_max}")
        finally:
            await http.aclose()
            await process.stop()


# -- instructions (--callgrind) -----------------------------------------------------------------
def _bench_module(name: str) -> Any:
    """A sibling script of ``bench/`` as a module (this folder is kept off ``sys.path``)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(name))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _tracing_bench() -> Any:
    """``bench/tracing.py``'s callgrind helpers (``Counted``, ``build_helper``)."""
    return _bench_module("tracing.py")


# -- a real server (--serve) --------------------------------------------------------------------
def serve(args: argparse.Namespace) -> None:
    lg = _bench_module("loadgen.py")
    work = Path(tempfile.mkdtemp(prefix="arcana-auth-me-"))
    env = lg.arcana_env(work, lg.free_port(), database_url=args.database_url)
    if args.redis_url:
        env["ARCANA_REDIS_URL"] = args.redis_url
        env["ARCANA_REDIS_PREFIX"] = f"bench-auth-me-{os.getpid()}"
    arcana = str(Path(sys.executable).parent / "arcana")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([arcana, "migrate"], env=env, cwd=work, check=True, capture_output=True)
        email = f"me-{os.getpid()}@example.com"
        create = [arcana, "users", "create", "--email", email, "--name", "Bench", "--admin"]
        subprocess.run(
            [*create, "--password-stdin"],
            input=PASSWORD + "\n",
            text=True,
            env=env,
            cwd=work,
            check=True,
            capture_output=True,
        )
        base = lg.start_serve(env, work, procs)
        r = httpx.post(f"{base}/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        r.raise_for_status()
        token = r.json()["access_token"]
        lua = f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        url = f"{base}/api/v1/auth/me"
        lg.run_wrk(url, 2, args.connections, lua, threads=1)
        results = []
        for _ in range(args.serve):
            result = lg.run_wrk_measured(procs[0].pid, url, 5, args.connections, lua, threads=1)
            assert result.errors == 0, result
            print(f"  {result.rps:8,.0f} req/s  {result.cpu_us:6,.0f} µs server CPU per request")
            results.append(result)
        med = lg.median_result(results)
        print(f"median: {med.rps:,.0f} req/s, {med.cpu_us:,.0f} µs server CPU per request")
    finally:
        lg.stop_processes(procs)
        shutil.rmtree(work, ignore_errors=True)


def _asgi_get(app: Any, target: str, token: str) -> Callable[[], Awaitable[int]]:
    """A ``GET`` as the ASGI messages a server would hand the app, and nothing else: what is
    counted is the app's work (and the database's, on this process's threads)."""
    headers = [(b"host", b"bench"), (b"authorization", f"Bearer {token}".encode())]

    async def get() -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": target,
            "raw_path": target.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
        }
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        return status[0]

    return get


def requester(args: argparse.Namespace, http: httpx.AsyncClient) -> Callable[[], Awaitable[int]]:
    """``GET /api/v1/auth/me`` through ``--client``: bare ASGI messages or httpx."""
    if args.client == "asgi":
        token = http.headers["authorization"].split(" ", 1)[1]
        transport = http._transport  # the app behind the client: ASGITransport keeps it
        return _asgi_get(transport.app, "/api/v1/auth/me", token)  # type: ignore[attr-defined]

    async def get() -> int:
        return (await http.get("/api/v1/auth/me")).status_code

    return get


async def counted_child(args: argparse.Namespace, helper: str) -> None:
    profile = cProfile.Profile() if args.profile else None
    counted = _tracing_bench().Counted(helper) if helper != "-" else None
    with tempfile.TemporaryDirectory() as tmp:
        process, http = await start(args, Path(tmp))
        get = requester(args, http)
        try:
            for _ in range(200):
                assert await get() == 200
            with counted or contextlib.nullcontext():
                if profile is not None:
                    profile.enable()
                for _ in range(args.requests):
                    await get()
                if profile is not None:
                    profile.disable()
        finally:
            await http.aclose()
            await process.stop()
    if profile is not None:
        pstats.Stats(profile).sort_stats(args.profile).print_stats(40)


def instructions(args: argparse.Namespace, helper: str, folder: Path, n: int) -> int:
    out = folder / f"callgrind.auth_me.{n}"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        __file__,
        "--callgrind-child",
        helper,
        "--requests",
        str(n),
        "--client",
        args.client,
    ]
    if args.database_url:
        cmd += ["--database-url", args.database_url]
    if args.redis_url:
        cmd += ["--redis-url", args.redis_url]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    for line in out.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {out}")


def callgrind(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        helper = _tracing_bench().build_helper(folder)
        # Two run lengths: their difference cancels whatever the counted part pays once.
        small, large = args.requests // 2, args.requests
        a = instructions(args, helper, folder, small)
        b = instructions(args, helper, folder, large)
    print(
        f"instructions per request (callgrind, {large} - {small} requests): "
        f"{(b - a) / (large - small):,.0f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--database-url", help="default: a SQLite file in a temporary folder")
    ap.add_argument("--redis-url", help="default: no Redis (in-process cache)")
    ap.add_argument("--requests", type=int, default=1000, help="sequential requests counted")
    ap.add_argument("--concurrency", type=int, default=64, help="requests at once (PostgreSQL)")
    ap.add_argument("--rounds", type=int, default=20, help="requests per concurrent client")
    ap.add_argument("--callgrind", action="store_true", help="also count instructions")
    ap.add_argument("--callgrind-child", help=argparse.SUPPRESS)
    ap.add_argument(
        "--client",
        choices=("asgi", "httpx"),
        default="httpx",
        help="for --callgrind and --profile: httpx.ASGITransport (its client work counted too) "
        "or bare ASGI messages (the app's work only)",
    )
    ap.add_argument(
        "--serve",
        type=int,
        metavar="N",
        help="measure N runs against a real arcana serve instead (see the module doc)",
    )
    ap.add_argument(
        "--connections", type=int, default=16, help="for --serve: wrk's connections (default 16)"
    )
    ap.add_argument(
        "--profile",
        metavar="SORT",
        help="cProfile the sequential requests instead (e.g. tottime, cumulative)",
    )
    args = ap.parse_args()
    if args.callgrind_child:
        asyncio.run(counted_child(args, args.callgrind_child))
        return
    if args.profile:
        asyncio.run(counted_child(args, "-"))
        return
    if args.serve:
        serve(args)
        return
    asyncio.run(counts(args))
    if args.callgrind:
        callgrind(args)


if __name__ == "__main__":
    main()
