# ruff: noqa: E402  (sys.path is cleaned before the imports)
"""Cost of one ``POST /api/v1/auth/login`` besides its Argon2 hash, counted, not timed.

    .venv/bin/python bench/login.py                                  # embedded SQLite
    .venv/bin/python bench/login.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/DB
    .venv/bin/python bench/login.py --callgrind                      # instructions (valgrind)
    .venv/bin/python bench/login.py --profile 30                     # cProfile, top functions
    .venv/bin/python bench/login.py --client httpx                   # + the httpx client's work
    .venv/bin/python bench/login.py --serve 4000                     # a real arcana serve

In-process: the whole ASGI app (``create_app`` over a started process, all middleware) driven
with bare ASGI messages (``--client httpx``: through ``httpx.ASGITransport``, whose own work is
then counted too), ``--requests`` successful logins one after the other for one account, the
relay and the job worker off. Argon2 runs at its minimum cost (8 KiB, t=1), so what is counted
is everything a login does but the hash. It prints the process CPU per login
(``time.process_time()`` over the counted logins: CPU, not wall time, so a loaded machine
inflates it less than a timing, but does not leave it untouched), each thread's share (its
own CPU clock: the event loop, the Argon2 threads, SQLite's reader and writer threads) and,
on PostgreSQL, the CPU of the server's backends serving this database (from ``/proc``: the
server must run on this machine); ``--callgrind`` counts instructions instead (every thread
of the process, instrumentation on only around the counted logins, the helper of
``bench/stock.py``), which does not depend on the machine's load. The event loop is uvloop,
as under ``arcana serve`` (``--loop asyncio`` for the standard one, which ``--profile`` sees
into).

The database named in ``--database-url`` must exist; it is migrated and its tables emptied.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))  # for tests.conftest

import argparse
import asyncio
import contextlib
import cProfile
import importlib.util
import json
import os
import pstats
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from typing import Any

import uvloop
from sqlalchemy import text

from arcana.adapters.database import Database
from arcana.adapters.migrator import migrate
from arcana.api.app import create_app
from arcana.config import Settings
from arcana.lifecycle import Lifecycle
from tests.conftest import truncate_all

PASSWORD = "Bench-Passw0rd-123"
EMAIL = "login-bench@example.com"


def _bench(name: str) -> Any:
    """``bench/{name}.py`` as a module (this folder is kept off ``sys.path``)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stock_bench() -> Any:
    """``bench/stock.py``'s in-process clients and callgrind helper (``Counted``, …)."""
    return _bench("stock")


def settings_for(folder: Path, database_url: str | None) -> Settings:
    """``bench/stock.py``'s settings, with Argon2 at its minimum cost."""
    stock: Any = _stock_bench()
    return stock.settings_for(folder, database_url, argon2_memory_kib=8, argon2_time_cost=1)


def thread_cpu() -> dict[int, tuple[str, float]]:
    """Each live thread of this process: its name and CPU seconds so far (its own clock)."""
    out = {}
    for t in threading.enumerate():
        if t.ident is not None:
            with contextlib.suppress(OSError):
                out[t.ident] = (t.name, time.clock_gettime(time.pthread_getcpuclockid(t.ident)))
    return out


async def backend_cpu(engine: Any) -> float:
    """CPU seconds so far of the PostgreSQL backends connected to the app's database (user +
    system, from ``/proc``; 0 when the server is not on this machine)."""
    async with engine.connect() as conn:
        pids = (await conn.execute(text(_BACKENDS))).scalars().all()
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


_BACKENDS = "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"


class Cpu:
    """CPU per login: the process, each thread, the PostgreSQL backends."""

    def __init__(self) -> None:
        self.process = 0.0
        self.threads: list[tuple[str, float]] = []
        self.backends: float | None = None

    def report(self, logins: int, client: str) -> str:
        per_login = self.process / logins * 1000
        lines = [f"process CPU per login: {per_login:.3f} ms ({logins} logins, {client})"]
        for name, seconds in sorted(self.threads, key=lambda t: -t[1]):
            if seconds / logins >= 1e-6:
                lines.append(f"  thread {name:<24} {seconds / logins * 1e6:8.1f} µs per login")
        if self.backends is not None:
            lines.append(
                f"PostgreSQL backends' CPU per login: {self.backends / logins * 1e6:.0f} µs "
                "(/proc, 10 ms ticks)"
            )
        return "\n".join(lines)


async def run(folder: Path, args: argparse.Namespace, counted: Any) -> Cpu:
    """CPU over the counted logins."""
    stock = _stock_bench()
    if args.database_url is not None:
        db = Database(settings_for(folder, args.database_url))
        await migrate(db)
        await db.dispose()
        await truncate_all(args.database_url)
    process = Lifecycle.build(settings_for(folder, args.database_url))
    cpu = Cpu()
    await process.start()
    try:
        await process.app.users.create_user(EMAIL, "Bench", PASSWORD)
        app = create_app(process.app)
        headers = {"user-agent": "bench-login/1"}
        if args.browser:
            headers["x-arcana-client"] = "browser"
        post = (stock._httpx_post if args.client == "httpx" else stock._asgi_post)(app, headers)
        body = json.dumps({"email": EMAIL, "password": PASSWORD}).encode()
        target = "/api/v1/auth/login"
        for _ in range(50):  # warm the code paths, the pool and the prepared statements
            await post(target, body)
        engine = process.app.db.engine
        backends0 = await backend_cpu(engine) if args.database_url else None
        with counted:
            threads0 = thread_cpu()
            t0 = time.process_time()
            for _ in range(args.requests):
                await post(target, body)
            cpu.process = time.process_time() - t0
            threads1 = thread_cpu()
        cpu.threads = [
            (name, seconds - threads0.get(ident, (name, 0.0))[1])
            for ident, (name, seconds) in threads1.items()
        ]
        if backends0 is not None and args.database_url:
            cpu.backends = await backend_cpu(engine) - backends0
        return cpu
    finally:
        await process.stop()


def child(args: argparse.Namespace, helper: str | None) -> None:
    profile = cProfile.Profile() if args.profile else None
    counted = _stock_bench().Counted(helper, profile)
    runner = uvloop.run if args.loop == "uvloop" else asyncio.run
    with tempfile.TemporaryDirectory() as tmp:
        cpu = runner(run(Path(tmp), args, counted))
    if helper is None and profile is None:
        print(cpu.report(args.requests, args.client))
    if profile is not None:
        stats = pstats.Stats(profile)
        stats.sort_stats(args.sort).print_stats(args.profile)


def callgrind(args: argparse.Namespace) -> None:
    child_args = ["--requests", str(args.requests), "--client", args.client, "--loop", args.loop]
    if args.database_url:
        child_args += ["--database-url", args.database_url]
    if args.browser:
        child_args.append("--browser")
    output, total = _stock_bench().callgrind_total(__file__, child_args, args.keep, "login")
    print(output, end="")
    print(f"instructions per login (callgrind, {args.client}): {total / args.requests / 1e6:.2f} M")


def _ticks(pid: int) -> int:
    """User + system CPU ticks of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime


def serve(args: argparse.Namespace) -> None:
    """``--serve N``: CPU per login of a real ``arcana serve`` (all its threads, from ``/proc``)
    over N logins by ``--clients`` keep-alive clients (``bench/auth.py``'s), Argon2 at its
    minimum cost as above; on PostgreSQL also its backends' CPU."""
    auth = _bench("auth")  # its LoginConnection client, free_port and serve_env
    work = Path(tempfile.mkdtemp(prefix="bench-login-serve-"))
    port = auth.free_port()
    env = {
        **auth.serve_env(port),
        "ARCANA_ARGON2_MEMORY_KIB": "8",
        "ARCANA_ARGON2_TIME_COST": "1",
        "ARCANA_DATABASE_URL": args.database_url or f"sqlite+aiosqlite:///{work}/bench.db",
    }
    arcana = str(Path(sys.executable).parent / "arcana")
    if args.database_url:
        subprocess.run([arcana, "migrate"], env=env, cwd=work, check=True, capture_output=True)
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen([arcana, "serve"], env=env, cwd=work, stdout=log, stderr=log)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            healthz = base + "/healthz"
            with contextlib.suppress(OSError), urllib.request.urlopen(healthz, timeout=1) as r:
                if r.status == 200:
                    break
            time.sleep(0.1)
        emails = [f"serve{i}-{os.urandom(3).hex()}@example.com" for i in range(args.clients)]
        for email in emails:
            body = json.dumps({"email": email, "name": "Bench", "password": auth.PASSWORD})
            request = urllib.request.Request(
                base + "/api/v1/auth/register",
                body.encode(),
                {"content-type": "application/json"},
            )
            urllib.request.urlopen(request, timeout=30).close()

        async def drive(count: int) -> None:
            left = [count]

            async def client(email: str) -> None:
                connection = auth.LoginConnection("127.0.0.1", port, email)
                while left[0] > 0:
                    left[0] -= 1
                    status, answer = await connection.login()
                    assert status == 200, answer
                await connection.close()

            await asyncio.gather(*(client(e) for e in emails))

        async def backends() -> list[int]:
            if not args.database_url:
                return []
            engine = Database(settings_for(work, args.database_url)).engine
            async with engine.connect() as conn:
                query = _BACKENDS + " AND application_name = 'arcana' AND pid <> pg_backend_pid()"
                pids = [int(p) for p in (await conn.execute(text(query))).scalars()]
            await engine.dispose()
            return pids

        asyncio.run(drive(500))  # warm: connections, statements, caches
        pids = asyncio.run(backends())
        server0, db0 = _ticks(proc.pid), sum(_ticks(p) for p in pids)
        asyncio.run(drive(args.serve))
        server1 = _ticks(proc.pid)
        db1 = sum(_ticks(p) for p in pids)
        hz = os.sysconf("SC_CLK_TCK")
        line = f"arcana serve CPU per login: {(server1 - server0) / hz / args.serve * 1e6:.0f} µs"
        if pids:
            line += f"; PostgreSQL backends: {(db1 - db0) / hz / args.serve * 1e6:.0f} µs"
        print(f"{line} ({args.serve} logins, {args.clients} clients, /proc, 10 ms ticks)")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=300, help="logins counted")
    ap.add_argument("--browser", action="store_true", help="send X-Arcana-Client: browser")
    ap.add_argument("--sort", default="tottime", help="--profile: pstats sort key")
    ap.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the event loop"
    )
    ap.add_argument(
        "--serve", type=int, default=0, help="N logins against a real arcana serve (/proc CPU)"
    )
    ap.add_argument("--clients", type=int, default=16, help="--serve: concurrent clients")
    _stock_bench().add_counting_arguments(ap)
    args = ap.parse_args()
    if args.serve:
        serve(args)
    elif args.callgrind:
        callgrind(args)
    else:
        child(args, args.child_helper)


if __name__ == "__main__":
    main()
