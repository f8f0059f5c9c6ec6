"""Arcana's own app under uvicorn and under granian, side by side in one run.

    make bench-servers          # or: .venv/bin/python bench/servers.py --rounds 3

Each server is ``arcana serve --server uvicorn|granian`` exactly as deployed (one process,
uvloop, gRPC off, the background runtime of embedded mode running, no access log), each on its
own embedded SQLite file filled with the same ``--rows`` products; each scenario runs
``--rounds`` times, servers and scenarios interleaved, with wrk at ``--connections``; the table
shows medians and the ratio granian / uvicorn.

An earlier version ran the app from a factory under ``python -m uvicorn`` with the command
line's defaults, which log every request to stdout (uvicorn's access log is on unless
``--no-access-log``): that, not the server, is why its uvicorn figure was about half of
``arcana serve``'s (bench/RESULTS.md, "granian vs uvicorn").
"""

from __future__ import annotations

import loadgen  # first: it takes this folder off sys.path (see bench/loadgen.py)

# isort: split
import argparse
import importlib.util
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


SERVERS = ("uvicorn", "granian")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per scenario and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    lg = loadgen
    http_api = _load("http_api")
    if not lg.have_wrk():
        raise SystemExit("wrk is needed (apt-get install wrk)")

    work = Path(tempfile.mkdtemp(prefix="arcana-bench-servers-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        bases: dict[str, str] = {}
        envs: dict[str, dict[str, str]] = {}
        for kind in SERVERS:
            folder = work / kind
            folder.mkdir()
            env = lg.arcana_env(folder, lg.free_port())
            envs[kind] = env
            print(f"{kind}: filling {args.rows} products ...", flush=True)
            arcana = str(lg.BIN / "arcana")
            subprocess.run(
                [arcana, "migrate"], env=env, cwd=folder, check=True, capture_output=True
            )
            lg.demo_data(env, folder, args.rows)
            bases[kind] = lg.start_serve(env, folder, procs, "--server", kind)
        # Per server: its own product id and admin token (each has its own database).
        pids = {kind: lg.first_product_id(bases[kind]) for kind in SERVERS}
        tokens = {
            kind: http_api.admin_token(envs[kind], work / kind, bases[kind]) for kind in SERVERS
        }

        def scenarios(kind: str) -> list[tuple[str, str, str | None]]:
            pid, token = pids[kind], tokens[kind]
            stock_lua = (
                'wrk.method = "POST"\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
                f'wrk.headers["Authorization"] = "Bearer {token}"\n'
                "wrk.body = '{\"quantity_change\": 1}'\n"
            )
            me_lua = f'wrk.headers["Authorization"] = "Bearer {token}"\n'
            return [
                ("GET /products/{id} cached", f"/api/v1/products/{pid}", None),
                ("GET /auth/me (bearer + one row)", "/api/v1/auth/me", me_lua),
                ("POST /products/{id}/stock", f"/api/v1/products/{pid}/stock", stock_lua),
            ]

        for kind in SERVERS:  # warm each server's caches and connections
            httpx.get(f"{bases[kind]}/api/v1/products/{pids[kind]}")
        print(
            f"load generator: wrk; {args.connections} connections, {args.rounds} rounds x "
            f"{args.duration}s; arcana serve --server uvicorn|granian, one process each, "
            "embedded SQLite (one each, same seed)",
            flush=True,
        )
        results: dict[tuple[str, str], list[object]] = {}
        names = [name for name, _, _ in scenarios("uvicorn")]
        settling = 0.0
        for _ in range(args.rounds):
            for i, name in enumerate(names):
                for kind in SERVERS:
                    for each in SERVERS:  # neither server still relaying the last writes
                        settling += lg.wait_outbox_drained(envs[each])
                    _, path, lua = scenarios(kind)[i]
                    r = lg.run_wrk(bases[kind] + path, args.duration, args.connections, lua)
                    results.setdefault((name, kind), []).append(r)
        print()
        print(
            "| scenario | uvicorn req/s | granian req/s | granian / uvicorn "
            "| uvicorn p99 ms | granian p99 ms | non-2xx / timeouts (u, g) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name in names:
            u = lg.median_result(results[(name, "uvicorn")])
            g = lg.median_result(results[(name, "granian")])
            print(
                f"| {name} | {u.rps:,.0f} | {g.rps:,.0f} | {g.rps / u.rps:.2f} | "
                f"{u.p99_ms:.2f} | {g.p99_ms:.2f} | "
                f"{u.errors}/{u.timeouts}, {g.errors}/{g.timeouts} |"
            )
        print(
            f"\nEach scenario started with both outboxes relayed (waited {settling:.1f} s in all)."
        )
    finally:
        lg.stop_processes(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
