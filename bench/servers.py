"""Arcana's own app under uvicorn and under granian, side by side in one run.

    make bench-servers          # or: bench/.venv/bin/python bench/servers.py --rounds 3

granian is not a dependency of the project: ``make bench-servers`` installs it in
``bench/.venv`` (beside the job-queue libraries) and runs this script there. Both servers run
the same app (``create_app`` over a started process, one process, uvloop, no access log) on the same
embedded SQLite file with ``--rows`` products; each scenario runs ``--rounds`` times, servers
and scenarios interleaved, with wrk at ``--connections``; the table shows medians and the ratio
granian / uvicorn. The background runtime of ``arcana serve`` (relay, job worker) runs in
neither, so the comparison is of the servers around the same request handling.
"""

from __future__ import annotations

import loadgen  # first: it takes this folder off sys.path (see bench/loadgen.py)

# isort: split
import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import httpx

_HERE = loadgen.HERE


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", _HERE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = module
    spec.loader.exec_module(module)
    return module


# The ASGI factory both servers load: Arcana's app over a process started and stopped by the
# server's lifespan (``arcana serve`` drives uvicorn itself, so it is no factory). Written to
# the run's directory: ``bench/`` itself must stay off the servers' path.
APP_MODULE = """
from contextlib import asynccontextmanager

from arcana.api.app import create_app
from arcana.config import get_settings
from arcana.lifecycle import Lifecycle


def app():
    process = Lifecycle.build(get_settings())
    inner = create_app(process.app)
    original = inner.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        await process.start()
        try:
            async with original(a):
                yield
        finally:
            await process.stop()

    inner.router.lifespan_context = lifespan
    return inner
"""


def server_cmd(kind: str, port: int) -> list[str]:
    target = "arcana_bench_app:app"
    common = ["--host", "127.0.0.1", "--port", str(port), "--factory", "--loop", "uvloop"]
    if kind == "uvicorn":
        return [sys.executable, "-m", "uvicorn", target, *common, "--http", "httptools"]
    return [
        sys.executable,
        "-m",
        "granian",
        target,
        "--interface",
        "asgi",
        "--workers",
        "1",
        "--no-access-log",
        *common,
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per scenario and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    lg = loadgen
    http_api = _load("http_api")
    if importlib.util.find_spec("granian") is None:
        raise SystemExit("granian is not installed here: run `make bench-servers`")
    if not lg.have_wrk():
        raise SystemExit("wrk is needed (apt-get install wrk)")

    work = Path(tempfile.mkdtemp(prefix="arcana-bench-servers-"))
    (work / "arcana_bench_app.py").write_text(APP_MODULE)
    env = {
        **os.environ,
        "PYTHONPATH": str(work),
        "ARCANA_DATABASE_URL": f"sqlite+aiosqlite:///{work}/bench.db",
        "ARCANA_JWT_SECRET": loadgen.SECRET,
        "ARCANA_GRPC_PORT": "0",
        "ARCANA_LOG_LEVEL": "WARNING",
    }
    env.pop("ARCANA_REDIS_URL", None)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        print(f"filling {args.rows} products ...", flush=True)
        arcana = str(lg.BIN / "arcana")
        subprocess.run([arcana, "migrate"], env=env, cwd=work, check=True, capture_output=True)
        subprocess.run(
            [arcana, "demo-data", "--products", str(args.rows), "--seed", "1"],
            env=env,
            cwd=work,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        bases: dict[str, str] = {}
        for kind in ("uvicorn", "granian"):
            port = lg.free_port()
            p = subprocess.Popen(server_cmd(kind, port), env=env, cwd=work)
            procs.append(p)
            bases[kind] = f"http://127.0.0.1:{port}"
            lg.wait_http(f"{bases[kind]}/healthz", p)
        base = bases["uvicorn"]
        pid = httpx.get(f"{base}/api/v1/products?size=1").json()["data"][0]["id"]
        token = http_api.admin_token(env, work, base)
        stock_lua = (
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = "Bearer {token}"\n'
            "wrk.body = '{\"quantity_change\": 1}'\n"
        )
        me_lua = f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        scenarios = [
            ("GET /products/{id} cached", f"/api/v1/products/{pid}", None),
            ("GET /auth/me (bearer + one row)", "/api/v1/auth/me", me_lua),
            ("POST /products/{id}/stock", f"/api/v1/products/{pid}/stock", stock_lua),
        ]
        for kind in bases:  # warm each server's caches and connections
            httpx.get(f"{bases[kind]}/api/v1/products/{pid}")
        print(
            f"load generator: wrk; {args.connections} connections, {args.rounds} rounds x "
            f"{args.duration}s; one process each, uvloop, same app and database",
            flush=True,
        )
        results: dict[tuple[str, str], list[object]] = {}
        for _ in range(args.rounds):
            for name, path, lua in scenarios:
                for kind, url in bases.items():
                    r = lg.run_wrk(url + path, args.duration, args.connections, lua)
                    results.setdefault((name, kind), []).append(r)
        print()
        print(
            "| scenario | uvicorn req/s | granian req/s | granian / uvicorn "
            "| uvicorn p99 ms | granian p99 ms | non-2xx / timeouts (u, g) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, _, _ in scenarios:
            u = lg.median_result(results[(name, "uvicorn")])
            g = lg.median_result(results[(name, "granian")])
            print(
                f"| {name} | {u.rps:,.0f} | {g.rps:,.0f} | {g.rps / u.rps:.2f} | "
                f"{u.p99_ms:.2f} | {g.p99_ms:.2f} | "
                f"{u.errors}/{u.timeouts}, {g.errors}/{g.timeouts} |"
            )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
