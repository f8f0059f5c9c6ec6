# ruff: noqa: E402  (sys.path is cleaned before the imports, see below)
"""Shared benchmark plumbing: servers as subprocesses and a load generator.

``wrk`` is used when installed (``apt-get install -y wrk``); otherwise a Python load generator
(httpx, asyncio) runs in its own process so it does not share the server's event loop.

A script of ``bench/`` imports this module first (``import loadgen``, found because the
script's folder is ``sys.path[0]``); the module then takes that folder off ``sys.path``, so
no script here (``grpc.py``...) shadows an installed module in the imports that follow.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep this directory off sys.path: a script here must never shadow an installed module.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRET = "bench-secret-" + "x" * 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def arcana_env(
    work: Path, http_port: int, *, grpc_port: int = 0, database_url: str | None = None
) -> dict[str, str]:
    """The environment of an embedded ``arcana`` (SQLite in ``work`` unless ``database_url``
    is given, no Redis whatever the caller's environment says)."""
    env = {
        **os.environ,
        "ARCANA_DATABASE_URL": database_url or f"sqlite+aiosqlite:///{work}/bench.db",
        "ARCANA_JWT_SECRET": SECRET,
        "ARCANA_HTTP_PORT": str(http_port),
        "ARCANA_GRPC_PORT": str(grpc_port),
        "ARCANA_LOG_LEVEL": "WARNING",
    }
    env.pop("ARCANA_REDIS_URL", None)
    return env


def wait_outbox_drained(env: dict[str, str], timeout: float = 180.0) -> float:
    """Wait until the ``arcana serve`` of ``env`` has relayed every outbox row; the seconds
    waited. Why: a write scenario leaves events behind for the relay, whose work would
    otherwise fall into the next scenario (of any server: they share the machine's cores) and
    be charged to it, in its throughput and above all in its p99."""
    url = env["ARCANA_DATABASE_URL"]
    query = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
    start = time.monotonic()
    while True:
        if url.startswith("sqlite"):
            import sqlite3

            conn = sqlite3.connect(url.split("///", 1)[1], timeout=30)
            try:
                left = int(conn.execute(query).fetchone()[0])
            finally:
                conn.close()
        else:
            import asyncpg

            async def count() -> int:
                pg = await asyncpg.connect(url.replace("+asyncpg", "", 1))
                try:
                    return int(await pg.fetchval(query))
                finally:
                    await pg.close()

            left = asyncio.run(count())
        waited = time.monotonic() - start
        if left == 0:
            return waited
        if waited > timeout:
            raise SystemExit(f"the outbox still holds {left} rows after {timeout:.0f} s")
        time.sleep(0.2)


def demo_data(env: dict[str, str], work: Path, products: int) -> None:
    subprocess.run(
        [str(BIN / "arcana"), "demo-data", "--products", str(products), "--seed", "1"],
        env=env,
        cwd=work,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def start_serve(
    env: dict[str, str], work: Path, procs: list[subprocess.Popen[bytes]], *args: str
) -> str:
    """``arcana serve ARGS``, appended to ``procs`` (for ``stop_processes``) and waited for
    until ``/healthz`` answers. Returns its base URL."""
    proc = subprocess.Popen([str(BIN / "arcana"), "serve", *args], env=env, cwd=work)
    procs.append(proc)
    base = f"http://127.0.0.1:{env['ARCANA_HTTP_PORT']}"
    wait_http(f"{base}/healthz", proc)
    return base


def first_product_id(base: str) -> str:
    return str(httpx.get(f"{base}/api/v1/products?size=1").json()["data"][0]["id"])


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout: float = 15) -> None:
    """Terminate all, then wait for each; kill what is still running after ``timeout``."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def latency_summary(latencies: list[float], elapsed: float) -> dict[str, float]:
    """Requests per second and the p50 / p99 latencies (ms) of a run of ``elapsed`` seconds."""
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    """Non-2xx answers."""
    timeouts: int = 0
    """Requests the load generator gave up on (wrk: 2 s)."""
    requests: int = 0
    """Requests answered in the run (wrk's count; 0 when unknown)."""
    cpu_us: float | None = None
    """The server's CPU time (user + system, every process of it) per request, in µs."""


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def wrk_cycle_lua(
    method: str, headers: dict[str, str], requests: list[tuple[str | None, str | None]]
) -> str:
    """A wrk script that sends ``requests`` (``(path or None for the URL's, body)``) in this
    order, over and over, each wrk thread starting at its own place in the list. A request
    without a body (``None``) is a ``GET``; the others use ``method``.

    Every request is formatted once, in ``init``, and ``request()`` only hands out the next
    string: ``wrk.format`` (header table walk, string building) per request is Lua work on the
    same cores as the server, and with 64 connections it showed in the measured rates."""
    lines = [f"wrk.method = {_lua_string(method)}"]
    lines += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()]
    lines.append("local wanted = {")
    for path, body in requests:
        # {path, body, method}: nil path, the URL's; nil method, wrk.method
        fields = [
            "nil" if path is None else _lua_string(path),
            "nil" if body is None else _lua_string(body),
            '"GET"' if body is None else "nil",
        ]
        lines.append(f"  {{{', '.join(fields)}}},")
    lines += [
        "}",
        "local threads = 0",
        "function setup(thread)",
        "  -- wrk's threads start far apart in the list, not on the same request",
        "  thread:set('start', (threads * 499) % #wanted)",
        "  threads = threads + 1",
        "end",
        "local formatted = {}",
        "local i = 0",
        "function init(args)",
        "  for k, r in ipairs(wanted) do formatted[k] = wrk.format(r[3], r[1], nil, r[2]) end",
        "  i = start or 0",
        "end",
        "function request()",
        "  i = i % #formatted + 1",
        "  return formatted[i]",
        "end",
    ]
    return "\n".join(lines) + "\n"


def run_wrk(
    url: str, seconds: float, connections: int, lua: str | None, threads: int = 2
) -> Result:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--latency", url]
    script = None
    if lua is not None:
        fd, script = tempfile.mkstemp(suffix=".lua")
        with os.fdopen(fd, "w") as fh:
            fh.write(lua)
        cmd[1:1] = ["-s", script]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    finally:
        if script is not None:
            os.unlink(script)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: .*?timeout (\d+)", out)
    timeouts = int(m.group(1)) if m else 0
    m = re.search(r"(\d+) requests in", out)
    return Result(rps, p50, p99, errors, timeouts, int(m.group(1)) if m else 0)


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and every process below it (the
    workers of ``arcana serve --workers N``), read from ``/proc``. Unlike wall-clock figures it
    is the server's own cost, whatever else shares the cores."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
        stats[int(entry)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        fields = stats.get(current)
        if fields is not None:
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        todo += children.get(current, [])
    return total


def run_wrk_measured(
    pid: int, url: str, seconds: float, connections: int, lua: str | None, threads: int = 2
) -> Result:
    """``run_wrk`` with the CPU time the server ``pid`` spent per request (``Result.cpu_us``)."""
    before = process_tree_cpu(pid)
    r = run_wrk(url, seconds, connections, lua, threads)
    used = process_tree_cpu(pid) - before
    r.cpu_us = used / r.requests * 1e6 if r.requests else None
    return r


async def _pygen(
    url: str,
    seconds: float,
    connections: int,
    method: str,
    body: str | None,
    headers: dict[str, str],
) -> dict[str, float]:
    """Minimal HTTP/1.1 keep-alive client on raw asyncio streams: one request in flight per
    connection, like wrk, and cheap enough not to be the bottleneck (httpx would be)."""
    parsed = urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    target = parsed.path + (f"?{parsed.query}" if parsed.query else "")
    payload = (body or "").encode()
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    for k, v in headers.items():
        head += f"{k}: {v}\r\n"
    if payload:
        head += f"Content-Length: {len(payload)}\r\n"
    request = head.encode() + b"\r\n" + payload
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                writer.write(request)
                status_line = await reader.readline()
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                if not status_line.startswith(b"HTTP/1.1 2"):
                    errors += 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - t0
    return {**latency_summary(latencies, elapsed), "errors": errors}


def run_python(
    url: str,
    seconds: float,
    connections: int,
    method: str = "GET",
    body: str | None = None,
    headers: dict[str, str] | None = None,
) -> Result:
    spec = json.dumps([url, seconds, connections, method, body, headers or {}])
    out = subprocess.run(
        [sys.executable, __file__, "--loadgen", spec], capture_output=True, text=True, check=True
    ).stdout
    d = json.loads(out)
    return Result(d["rps"], d["p50_ms"], d["p99_ms"], int(d["errors"]))


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def median_result(results: list[Result]) -> Result:
    cpu = [r.cpu_us for r in results if r.cpu_us is not None]
    return Result(
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
        sum(r.timeouts for r in results),
        sum(r.requests for r in results),
        statistics.median(cpu) if cpu else None,
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--loadgen":
        u, s, c, m, b, h = json.loads(sys.argv[2])
        print(json.dumps(asyncio.run(_pygen(u, s, c, m, b, h))))
    else:
        print(
            "bench/loadgen.py: the load generator shared by the HTTP benchmarks (a module;\n"
            "run as a worker with --loadgen JSON by those benchmarks)."
        )
        sys.exit(0 if sys.argv[1:] in ([], ["--help"], ["-h"]) else 2)
