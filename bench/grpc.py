# ruff: noqa: E402  (sys.path is cleaned before the imports, see below)
"""Unary ``GetProduct`` over gRPC against the cached REST ``GET /products/{id}``, same run.

    make bench-grpc            # or: .venv/bin/python bench/grpc.py --rounds 3 --duration 5

One ``arcana serve`` process (embedded settings, HTTP and gRPC on). Both transports are driven
by the same kind of client, a Python asyncio load generator in its own process with 64 calls
in flight (grpc.aio on one channel / 64 raw HTTP/1.1 keep-alive connections), so the ratio
compares the servers, not the clients. With ``wrk`` installed the REST route is also
measured with wrk for scale.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep this directory off sys.path: a script here must never shadow an installed module.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
import time

import httpx


def _load_loadgen():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_loadgen", _HERE / "loadgen.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_loadgen"] = module
    spec.loader.exec_module(module)
    return module


async def _grpc_load(
    target: str, product_id: str, seconds: float, concurrency: int
) -> dict[str, float]:
    import grpc

    from arcana.rpc.gen.arcana.product.v1 import product_pb2 as pb
    from arcana.rpc.gen.arcana.product.v1 import product_pb2_grpc as pb_grpc

    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.ProductServiceStub(channel)
        request = pb.GetProductRequest(id=product_id)
        await stub.GetProduct(request)
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    await stub.GetProduct(request, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "errors": errors,
    }


def main() -> None:
    lg = _load_loadgen()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="arcana-bench-grpc-"))
    http_port, grpc_port = lg.free_port(), lg.free_port()
    env = {
        **os.environ,
        "ARCANA_DATABASE_URL": f"sqlite+aiosqlite:///{work}/bench.db",
        "ARCANA_JWT_SECRET": "bench-secret-" + "x" * 40,
        "ARCANA_HTTP_PORT": str(http_port),
        "ARCANA_GRPC_PORT": str(grpc_port),
        "ARCANA_LOG_LEVEL": "WARNING",
    }
    env.pop("ARCANA_REDIS_URL", None)
    server = None
    try:
        subprocess.run(
            [str(lg.BIN / "arcana"), "demo-data", "--products", "1000", "--seed", "1"],
            env=env,
            cwd=work,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        server = subprocess.Popen([str(lg.BIN / "arcana"), "serve"], env=env, cwd=work)
        base = f"http://127.0.0.1:{http_port}"
        lg.wait_http(f"{base}/healthz", server)
        pid = httpx.get(f"{base}/api/v1/products?size=1").json()["data"][0]["id"]
        url = f"{base}/api/v1/products/{pid}"
        httpx.get(url)  # warm the cache
        spec = json.dumps([f"127.0.0.1:{grpc_port}", pid, args.duration, args.connections])
        results: dict[str, list[object]] = {
            "gRPC GetProduct (python client)": [],
            "REST GET cached (python client)": [],
        }
        if lg.have_wrk():
            results["REST GET cached (wrk)"] = []
        for _ in range(args.rounds):
            out = subprocess.run(
                [sys.executable, __file__, "--grpc-load", spec],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            d = json.loads(out)
            results["gRPC GetProduct (python client)"].append(
                lg.Result(d["rps"], d["p50_ms"], d["p99_ms"], int(d["errors"]))
            )
            results["REST GET cached (python client)"].append(
                lg.run_python(url, args.duration, args.connections)
            )
            if lg.have_wrk():
                results["REST GET cached (wrk)"].append(
                    lg.run_wrk(url, args.duration, args.connections, None)
                )
        med = {k: lg.median_result(v) for k, v in results.items()}
        ref = med["REST GET cached (python client)"].rps
        print(f"\n{args.connections} in flight, {args.rounds} rounds x {args.duration}s, medians")
        print("| scenario | req/s | p50 ms | p99 ms | vs REST (same client) | errors |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, r in med.items():
            print(
                f"| {name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                f"{r.rps / ref:.2f} | {r.errors} |"
            )
    finally:
        if server is not None:
            server.terminate()
            server.wait(20)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--grpc-load":
        target, product_id, seconds, conc = json.loads(sys.argv[2])
        print(json.dumps(asyncio.run(_grpc_load(target, product_id, seconds, conc))))
    else:
        main()
