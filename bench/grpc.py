"""Unary ``GetProduct`` over gRPC against the cached REST ``GET /products/{id}``, same run.

    make bench-grpc            # or: .venv/bin/python bench/grpc.py --rounds 3 --duration 5

One ``arcana serve`` process (embedded settings, HTTP and gRPC on) and, as the ceiling, a bare
``grpc.aio`` servicer (``bench/bare.py grpc``: the same product as a message built once, no
interceptors). With ``h2load`` installed (Debian's nghttp2-client) the main table drives both
gRPC servers and the cached REST route with it (64 calls in flight: 4 HTTP/2 connections x 16
streams; REST over 64 HTTP/1.1 connections), because the Python grpc.aio client saturates
before either server does: ``vs bare gRPC`` is the figure to watch, ``vs REST`` is for
information. The older table (a Python asyncio client for both transports) follows it.
"""

from __future__ import annotations

import loadgen as lg  # first: it takes this folder off sys.path (see bench/loadgen.py)

# isort: split
import argparse
import asyncio
import json
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx


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
    return {**lg.latency_summary(latencies, elapsed), "errors": errors}


def have_h2load() -> bool:
    return shutil.which("h2load") is not None


def run_h2load(
    lg: Any,
    url: str,
    seconds: float,
    *,
    clients: int,
    streams: int,
    data: Path | None = None,
    headers: tuple[str, ...] = (),
    h1: bool = False,
) -> Any:
    """One h2load run; throughput from its summary, p50/p99 from its per-request log."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "requests.log"
        cmd = ["h2load", "-t1", f"-c{clients}", f"-m{streams}", f"-D{int(max(1, seconds))}"]
        cmd += ["--warm-up-time=1", f"--log-file={log}"]
        if h1:
            cmd.append("--h1")
        if data is not None:
            cmd.append(f"--data={data}")
        for header in headers:
            cmd += ["-H", header]
        out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
        match = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
        rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    times = sorted(int(r[2]) / 1000 for r in rows)
    errors = sum(1 for r in rows if not r[1].startswith("2"))
    if not times:
        return lg.Result(0.0, 0.0, 0.0, errors)
    rps = float(match.group(1)) if match else 0.0
    return lg.Result(
        rps, times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))], errors
    )


def grpc_request_file(work: Path, product_id: str) -> Path:
    """A gRPC-framed ``GetProductRequest`` (flag byte, 4-byte length, message) for h2load."""
    from arcana.rpc.gen.arcana.product.v1 import product_pb2 as pb

    raw = pb.GetProductRequest(id=product_id).SerializeToString()
    path = work / "get_product.grpc"
    path.write_bytes(struct.pack(">BI", 0, len(raw)) + raw)
    return path


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bare gRPC servicer exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"bare gRPC servicer not listening on {port} within {timeout}s")


GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
GET_PRODUCT = "/arcana.product.v1.ProductService/GetProduct"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="arcana-bench-grpc-"))
    http_port, grpc_port = lg.free_port(), lg.free_port()
    env = lg.arcana_env(work, http_port, grpc_port=grpc_port)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        lg.demo_data(env, work, 1000)
        base = lg.start_serve(env, work, procs)
        pid = lg.first_product_id(base)
        url = f"{base}/api/v1/products/{pid}"
        httpx.get(url)  # warm the cache
        bare = None
        if have_h2load():
            (work / "product.json").write_bytes(httpx.get(url).content)
            bare_port = lg.free_port()
            bare = subprocess.Popen(
                [
                    sys.executable,
                    str(lg.HERE / "bare.py"),
                    "grpc",
                    str(bare_port),
                    str(work / "product.json"),
                ]
            )
            h2: dict[str, list[Any]] = {
                "bare grpc.aio servicer (memory)": [],
                "gRPC GetProduct cached": [],
                "REST GET /products/{id} cached": [],
            }
            body = grpc_request_file(work, pid)
            streams = max(1, args.connections // 4)
            grpc_kw: dict[str, Any] = {
                "clients": 4,
                "streams": streams,
                "data": body,
                "headers": GRPC_HEADERS,
            }
            _wait_port(bare_port, bare)
            for _ in range(args.rounds):
                h2["bare grpc.aio servicer (memory)"].append(
                    run_h2load(
                        lg, f"http://127.0.0.1:{bare_port}{GET_PRODUCT}", args.duration, **grpc_kw
                    )
                )
                h2["gRPC GetProduct cached"].append(
                    run_h2load(
                        lg, f"http://127.0.0.1:{grpc_port}{GET_PRODUCT}", args.duration, **grpc_kw
                    )
                )
                h2["REST GET /products/{id} cached"].append(
                    run_h2load(lg, url, args.duration, clients=args.connections, streams=1, h1=True)
                )
            bare.terminate()
            bare.wait(10)
            hm = {k: lg.median_result(v) for k, v in h2.items()}
            ceiling = hm["bare grpc.aio servicer (memory)"].rps
            rest = hm["REST GET /products/{id} cached"].rps
            print(
                f"\nh2load, {args.connections} in flight, {args.rounds} rounds x "
                f"{args.duration}s, medians"
            )
            print("| scenario | req/s | p50 ms | p99 ms | vs bare gRPC | vs REST | errors |")
            ceiling, rest = ceiling or float("nan"), rest or float("nan")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for name, r in hm.items():
                print(
                    f"| {name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                    f"{r.rps / ceiling:.2f} | {r.rps / rest:.2f} | {r.errors} |"
                )
        else:
            print("h2load not installed: only the Python-client table", file=sys.stderr)
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
        print(
            f"\nPython clients, {args.connections} in flight, {args.rounds} rounds x "
            f"{args.duration}s, medians"
        )
        print("| scenario | req/s | p50 ms | p99 ms | vs REST (same client) | errors |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, r in med.items():
            print(
                f"| {name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                f"{r.rps / ref:.2f} | {r.errors} |"
            )
    finally:
        lg.stop_processes(procs, timeout=20)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--grpc-load":
        target, product_id, seconds, conc = json.loads(sys.argv[2])
        print(json.dumps(asyncio.run(_grpc_load(target, product_id, seconds, conc))))
    else:
        main()
