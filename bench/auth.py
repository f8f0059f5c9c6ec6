# ruff: noqa: E402  (sys.path is cleaned before the imports)
"""Login throughput of a real ``arcana serve`` against the Argon2 bound, side by side.

    python bench/auth.py [--clients 8] [--seconds 10] [--modes embedded,postgres]
        [--scenarios steady,register-flood,guess-burst] [--flooders 16] [--guesses 1000]

Scenarios: ``steady`` (logins only), ``register-flood`` (``--flooders`` clients register new
accounts non-stop beside the login clients), ``guess-burst`` (``--guesses`` parallel wrong
passwords for one victim account fired at once, then again, beside the login clients). The
per-address limits are lifted so the attack stands for one spread over many addresses; what
protects the legitimate logins is then the hashing-slot bound and the reserve-before-hash
login limit. Each row gives the legitimate clients' logins/s, their latency and refusals, and
what the attacker's requests got.

A login costs one Argon2id verification (default parameters: 19 MiB, t=2, p=1), which runs in
a worker thread and releases the GIL, so one process can verify on every core it is bound to.
The bound is therefore ``cores / t_hash`` logins per second, with ``t_hash`` measured here, in
the same run, on the same machine. The table prints measured throughput, the bound and their
ratio, plus latency percentiles.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep this folder off sys.path: a script here must never shadow an installed module
# (``grpc.py`` would shadow grpcio).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from argon2 import PasswordHasher, Type

ARCANA = str(Path(sys.executable).parent / "arcana")
PG_ADMIN = os.environ.get("ARCANA_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD = "Bench-Passw0rd-42"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hash_seconds(samples: int = 15) -> float:
    """Median time of one Argon2id verification with the service's default parameters."""
    hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.ID)
    h = hasher.hash(PASSWORD)
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        hasher.verify(h, PASSWORD)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def parallel_rate(threads: int, seconds: float = 2.0) -> float:
    """Verifications per second with ``threads`` threads verifying at once and nothing else
    running: the bound as the machine gives it. Parallel Argon2 runs share the caches and the
    memory bus (19 MiB each), so this can be below ``cores / t_hash``; a login rate close to it
    but far from ``cores / t_hash`` is bounded by the hardware, not by the server."""
    hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.ID)
    h = hasher.hash(PASSWORD)
    done = [0] * threads
    start = time.perf_counter()
    stop = start + seconds

    def work(i: int) -> None:
        while time.perf_counter() < stop:
            hasher.verify(h, PASSWORD)
            done[i] += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return sum(done) / (time.perf_counter() - start)


class LoginConnection:
    """One keep-alive HTTP/1.1 connection that sends one prepared login request, over and over.

    The load generator shares the machine's cores with the server, and every millisecond of its
    CPU per login is a millisecond the Argon2 threads do not get. ``httpx.AsyncClient`` spends
    more CPU per request than the server spends on everything but the hash (``bench/login.py
    --client httpx`` against ``--client asgi``), so the legitimate clients write the request
    bytes themselves and read only the status line, the headers and a ``Content-Length`` body:
    what uvicorn sends. The request on the wire is the one httpx sent (same method, path,
    headers that matter and JSON body), so the server does the same work."""

    def __init__(self, host: str, port: int, email: str) -> None:
        body = json.dumps({"email": email, "password": PASSWORD}).encode()
        self._request = (
            f"POST /api/v1/auth/login HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Accept: */*\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n"
            "User-Agent: bench-auth\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self._host, self._port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def login(self) -> tuple[int, bytes]:
        """The status and body of one login (a new connection if the server closed the last)."""
        if self._writer is None or self._reader is None or self._reader.at_eof():
            await self.close()
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        self._writer.write(self._request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self._reader.readexactly(length)
        if close:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


async def drive(
    base: str,
    emails: list[str],
    clients: int,
    seconds: float,
    refused: Counter[int] | None = None,
) -> list[float]:
    """Legitimate logins for ``seconds``; latencies of the successful ones. Refusals (429 from
    a limit, 503 from busy hashing slots) are counted in ``refused`` when given, else fatal."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    url = urlsplit(base)
    host, port = url.hostname or "127.0.0.1", url.port or 80

    async def worker(i: int) -> None:
        connection = LoginConnection(host, port, emails[i % len(emails)])
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                status, body = await connection.login()
                if status != 200:
                    if refused is None or status not in (429, 503):
                        raise SystemExit(f"login failed: {status} {body.decode(errors='replace')}")
                    refused[status] += 1
                    await asyncio.sleep(0.05)
                    continue
                latencies.append(time.perf_counter() - t0)
        finally:
            await connection.close()

    await asyncio.gather(*(worker(i) for i in range(clients)))
    return latencies


async def register_flood(base: str, flooders: int, stop: asyncio.Event) -> Counter[int]:
    """New accounts as fast as the server takes them (each costs a full Argon2 hash)."""
    codes: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=flooders, max_keepalive_connections=flooders)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:

        async def flooder() -> None:
            while not stop.is_set():
                r = await client.post(
                    "/api/v1/auth/register",
                    json={
                        "name": "Flood",
                        "email": f"flood-{uuid.uuid4().hex}@example.com",
                        "password": PASSWORD,
                    },
                )
                codes[r.status_code] += 1

        await asyncio.gather(*(flooder() for _ in range(flooders)))
    return codes


async def guess_bursts(base: str, victim: str, guesses: int, stop: asyncio.Event) -> Counter[int]:
    """``guesses`` parallel wrong passwords for one account, fired at once, until stopped."""
    codes: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        while not stop.is_set():
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/api/v1/auth/login",
                        json={"email": victim, "password": f"Guess-{i}-Wrong"},
                    )
                    for i in range(guesses)
                ),
                return_exceptions=True,
            )
            for r in responses:
                codes[r.status_code if isinstance(r, httpx.Response) else 0] += 1
    return codes


async def under_attack(
    base: str, scenario: str, emails: list[str], args: argparse.Namespace
) -> tuple[list[float], Counter[int], Counter[int]]:
    stop = asyncio.Event()
    refused: Counter[int] = Counter()
    if scenario == "register-flood":
        attack = asyncio.create_task(register_flood(base, args.flooders, stop))
    else:
        attack = asyncio.create_task(guess_bursts(base, emails[-1], args.guesses, stop))
    await asyncio.sleep(0.5)  # the attack is under way before measuring
    try:
        lat = await drive(base, emails[:-1], args.clients, args.seconds, refused)
    finally:
        stop.set()
        codes = await attack
    return lat, refused, codes


def serve_env(port: int) -> dict[str, str]:
    """The environment of the benchmarked ``arcana serve`` (``bench/login.py --serve`` too):
    no Redis, the per-address limits lifted."""
    env = {
        **os.environ,
        "ARCANA_HTTP_PORT": str(port),
        "ARCANA_GRPC_PORT": "0",
        "ARCANA_LOG_LEVEL": "WARNING",
        "ARCANA_JWT_SECRET": "bench-secret-" + "x" * 40,
        "ARCANA_LOGIN_MAX_FAILURES_PER_IP": "1000000",
        # An attack from many addresses: per-address limits do not apply to it.
        "ARCANA_REGISTER_LIMIT_PER_IP": "1000000000",
    }
    env.pop("ARCANA_REDIS_URL", None)
    return env


def run_mode(
    mode: str, scenario: str, args: argparse.Namespace, workdir: Path
) -> dict[str, object]:
    clients, seconds = args.clients, args.seconds
    port = free_port()
    env = serve_env(port)
    dbname = None
    if mode == "postgres":
        import asyncpg

        dbname = f"arcana_bench_{uuid.uuid4().hex[:8]}"

        async def create() -> None:
            conn = await asyncpg.connect(PG_ADMIN)
            await conn.execute(f'CREATE DATABASE "{dbname}"')
            await conn.close()

        asyncio.run(create())
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        env["ARCANA_DATABASE_URL"] = f"{base}/{dbname}"
        subprocess.run([ARCANA, "migrate"], env=env, cwd=workdir, check=True, capture_output=True)
    else:
        env["ARCANA_DATABASE_URL"] = f"sqlite+aiosqlite:///{workdir}/bench-{mode}-{scenario}.db"
    log = (workdir / f"serve-{mode}-{scenario}.log").open("wb")
    proc = subprocess.Popen(
        [ARCANA, "serve"], env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        # One more account than clients: the victim of the guess bursts.
        emails = [f"bench{i}-{uuid.uuid4().hex[:6]}@example.com" for i in range(clients + 1)]
        for email in emails:
            r = httpx.post(
                f"{base_url}/api/v1/auth/register",
                json={"name": "Bench", "email": email, "password": PASSWORD},
                timeout=30,
            )
            r.raise_for_status()
        asyncio.run(drive(base_url, emails[:-1], clients, 1.0))  # warm-up
        refused: Counter[int] = Counter()
        attacker: Counter[int] = Counter()
        t0 = time.perf_counter()
        client_cpu = float("nan")
        if scenario == "steady":
            cpu0 = time.process_time()
            lat = asyncio.run(drive(base_url, emails[:-1], clients, seconds, refused))
            elapsed = time.perf_counter() - t0
            client_cpu = (time.process_time() - cpu0) / max(1, len(lat))
        else:
            lat, refused, attacker = asyncio.run(under_attack(base_url, scenario, emails, args))
            elapsed = seconds
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if dbname is not None:
            import asyncpg

            async def drop() -> None:
                conn = await asyncpg.connect(PG_ADMIN)
                await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
                await conn.close()

            asyncio.run(drop())
    lat.sort()
    return {
        "rate": len(lat) / elapsed,
        "p50": lat[len(lat) // 2] * 1000 if lat else float("nan"),
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan"),
        "n": len(lat),
        "client_ms": client_cpu * 1000,
        "refused": " ".join(f"{k}:{v}" for k, v in sorted(refused.items())) or "-",
        "attacker": " ".join(f"{k}:{v}" for k, v in sorted(attacker.items())) or "-",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--modes", default="embedded,postgres")
    parser.add_argument("--scenarios", default="steady,register-flood,guess-burst")
    parser.add_argument("--flooders", type=int, default=16)
    parser.add_argument("--guesses", type=int, default=1000)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    workdir = Path(tempfile.mkdtemp(prefix="arcana-bench-auth-"))
    rows = []
    try:
        for mode in args.modes.split(","):
            for scenario in args.scenarios.split(","):
                t_before, par_before = hash_seconds(), parallel_rate(cores)
                result = run_mode(mode, scenario, args, workdir)
                t_after, par_after = hash_seconds(), parallel_rate(cores)
                t_hash = (t_before + t_after) / 2
                bound = cores / t_hash
                par = (par_before + par_after) / 2
                rows.append((mode, scenario, t_hash, bound, par, result))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"cores bound: {cores}   clients: {args.clients}   duration: {args.seconds:.0f} s")
    print(
        f"{'mode':<10} {'scenario':<15} {'argon2 ms':>9} {'bound/s':>8} {'logins/s':>9} "
        f"{'ratio':>6} {'par/s':>6} {'vs par':>6} {'p50 ms':>7} {'p99 ms':>7} {'logins':>7}  "
        f"{'refused':<14} attacker got (status:count)"
    )
    for mode, scenario, t_hash, bound, par, r in rows:
        rate = float(r["rate"])  # type: ignore[arg-type]
        print(
            f"{mode:<10} {scenario:<15} {t_hash * 1000:>9.1f} {bound:>8.1f} {rate:>9.1f} "
            f"{rate / bound:>6.2f} {par:>6.1f} {rate / par:>6.2f} "
            f"{r['p50']:>7.1f} {r['p99']:>7.1f} {r['n']:>7}  "
            f"{r['refused']!s:<14} {r['attacker']}"
        )
    for mode, scenario, _, _, _, r in rows:
        if scenario == "steady":
            print(f"{mode}: the load generator's own CPU per steady login: {r['client_ms']:.2f} ms")
    print(
        "ratio: logins/s over cores / t_hash; par/s: verifications per second with one thread "
        "per core hashing alone (the machine's own bound), vs par: logins/s over it"
    )


if __name__ == "__main__":
    main()
