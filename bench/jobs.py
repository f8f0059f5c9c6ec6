"""Job queue benchmark: ours beside dramatiq, taskiq (taskiq-redis) and SAQ, same Redis, same run.

    make bench-jobs        # creates bench/.venv with the other libraries, then runs this

No-op jobs, library defaults except one worker process per "process". Measures:
enqueue throughput one at a time (awaiting each; see below) and batched (our ``enqueue_many``;
the others have no batch call, so 500 concurrent enqueues — dramatiq's client is synchronous,
so one at a time); processing throughput with 1 and 2 worker processes over a pre-filled queue
(from the first to the last completion, so start-up is excluded) and worker CPU per job;
enqueue->start latency p50/p99 with an idle worker and one job every 10 ms.

Single enqueues are measured alike for every library, in a phase of their own before the
per-library runs: each library's client is set up and warmed up (``BENCH_N_WARMUP`` calls, 500:
connections opened, scripts loaded, code paths run), then ``BENCH_SINGLE_ROUNDS`` rounds (5) give
each library ``BENCH_N_SINGLE`` awaited calls (5,000) in turn, the order rotated from round to
round, so a slow spell of the machine falls on every library alike; each library's keys are
cleared after each of its rounds, outside the timing. The table shows each library's median
round; every round's rate is printed below it. Each library makes its own idiomatic single call
(dramatiq's synchronous ``send``, taskiq's ``kiq``, SAQ's ``enqueue``, our ``enqueue``).

Placement (``--no-placement`` skips it): on this host kind a wake-up across virtual CPUs costs
tens of microseconds, more than a client library's own work per call, and the scheduler decides
from run to run whether the client and Redis share a CPU. So the single-enqueue phase runs once
more in each placement, against a private ``redis-server`` pinned to CPU 0 (started here, when
``redis-server`` is on ``PATH`` and there are two CPUs): the client on CPU 0 (same CPU as Redis)
and on CPU 1 (other CPU), each in a process of its own. Beside each, the round trip of a bare
``PING`` on a raw socket: what any client pays per call there before doing any work.

Redis: BENCH_REDIS_URL (default db 12 of the local server); only this benchmark's keys are
touched.

Worker processes import the apps from a temporary folder holding only ``jobs_apps`` (a link),
so no other script of ``bench/`` is on their path.
"""

from __future__ import annotations

import loadgen  # first: it takes this folder off sys.path (see bench/loadgen.py)

# isort: split
import argparse
import asyncio
import atexit
import functools
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis as sync_redis

HERE = Path(__file__).resolve().parent
# Only ``jobs_apps`` is importable from here, for this process and the workers.
APPS = Path(tempfile.mkdtemp(prefix="arcana-bench-jobs-"))
atexit.register(shutil.rmtree, APPS, ignore_errors=True)
(APPS / "jobs_apps").symlink_to(HERE / "jobs_apps", target_is_directory=True)
sys.path.insert(0, str(APPS))
os.environ.setdefault("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
REDIS_URL = os.environ["BENCH_REDIS_URL"]

N_SINGLE = int(os.environ.get("BENCH_N_SINGLE", "5000"))
SINGLE_ROUNDS = int(os.environ.get("BENCH_SINGLE_ROUNDS", "5"))
N_WARMUP = int(os.environ.get("BENCH_N_WARMUP", "500"))
N_BATCH = int(os.environ.get("BENCH_N_BATCH", "10000"))
N_LATENCY = int(os.environ.get("BENCH_N_LATENCY", "300"))


class Lib:
    name: str
    tag: str

    def worker_cmd(self) -> list[str]:
        raise NotImplementedError

    async def setup(self) -> None: ...

    async def enqueue_one(self, t: float | None) -> None:
        raise NotImplementedError

    async def enqueue_batch(self, n: int) -> None:
        raise NotImplementedError

    async def close(self) -> None: ...

    def keys(self) -> list[str]:
        raise NotImplementedError


class Ours(Lib):
    name, tag = "arcana (ours)", "arcana"

    async def setup(self) -> None:
        from redis.asyncio import Redis

        from arcana.adapters.jobqueue.redis import RedisJobQueue
        from arcana.domain.jobs import JobRequest

        self.JobRequest = JobRequest
        self.redis = Redis.from_url(REDIS_URL)
        self.queue = RedisJobQueue(self.redis, "bench-arcana", finished_ttl=3600)

    def worker_cmd(self) -> list[str]:
        return [sys.executable, "-m", "jobs_apps.ours_worker"]

    async def enqueue_one(self, t: float | None) -> None:
        await self.queue.enqueue(self.JobRequest("system.noop", {"t": t} if t else {}))

    async def enqueue_batch(self, n: int) -> None:
        for i in range(0, n, 500):
            await self.queue.enqueue_many(
                [self.JobRequest("system.noop") for _ in range(min(500, n - i))]
            )

    async def close(self) -> None:
        await self.redis.aclose()

    def keys(self) -> list[str]:
        return ["*{bench-arcana}*"]


class Dramatiq(Lib):
    name, tag = "dramatiq", "dramatiq"

    async def setup(self) -> None:
        from jobs_apps import dramatiq_app

        self.app = dramatiq_app

    def worker_cmd(self) -> list[str]:
        return [
            str(Path(sys.executable).parent / "dramatiq"),
            "jobs_apps.dramatiq_app",
            "--processes",
            "1",
        ]

    async def enqueue_one(self, t: float | None) -> None:
        self.app.noop.send(t)

    async def enqueue_batch(self, n: int) -> None:
        for _ in range(n):
            self.app.noop.send(None)

    def keys(self) -> list[str]:
        return ["bench-dramatiq*"]


class Taskiq(Lib):
    name, tag = "taskiq", "taskiq"

    async def setup(self) -> None:
        from jobs_apps import taskiq_app

        self.app = taskiq_app
        await taskiq_app.broker.startup()

    def worker_cmd(self) -> list[str]:
        return [
            str(Path(sys.executable).parent / "taskiq"),
            "worker",
            "jobs_apps.taskiq_app:broker",
            "--workers",
            "1",
        ]

    async def enqueue_one(self, t: float | None) -> None:
        await self.app.noop.kiq(t)

    async def enqueue_batch(self, n: int) -> None:
        for i in range(0, n, 500):
            await asyncio.gather(*(self.app.noop.kiq(None) for _ in range(min(500, n - i))))

    async def close(self) -> None:
        await self.app.broker.shutdown()

    def keys(self) -> list[str]:
        return ["bench-taskiq*"]


class Saq(Lib):
    name, tag = "saq", "saq"

    async def setup(self) -> None:
        from jobs_apps import saq_app

        self.app = saq_app
        await saq_app.queue.connect()

    def worker_cmd(self) -> list[str]:
        return [str(Path(sys.executable).parent / "saq"), "jobs_apps.saq_app.settings"]

    async def enqueue_one(self, t: float | None) -> None:
        await self.app.queue.enqueue("noop", t=t)

    async def enqueue_batch(self, n: int) -> None:
        for i in range(0, n, 500):
            await asyncio.gather(*(self.app.queue.enqueue("noop") for _ in range(min(500, n - i))))

    async def close(self) -> None:
        await self.app.queue.disconnect()

    def keys(self) -> list[str]:
        return ["saq:bench-saq*", "saq:job:bench-saq:*", "bench-saq*"]


def clean(lib: Lib) -> None:
    r = sync_redis.Redis.from_url(REDIS_URL)
    for pattern in [*lib.keys(), f"bench:{lib.tag}:*"]:
        keys = list(r.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            r.delete(*keys[i : i + 500])


def counts(lib: Lib) -> int:
    r = sync_redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=f"bench:{lib.tag}:count:*"))
    return sum(int(v or 0) for v in r.mget(keys)) if keys else 0


def start_workers(lib: Lib, n: int) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "BENCH_TAG": lib.tag,
        "BENCH_WORKER": "1",
        "PYTHONPATH": str(APPS),
        "dramatiq_prom_db": "/tmp/bench-dramatiq-prom",
    }
    return [
        subprocess.Popen(
            lib.worker_cmd(),
            cwd=APPS,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(n)
    ]


async def timed(fn: Callable[[], Awaitable[None]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return time.perf_counter() - t0


async def process(lib: Lib, n_procs: int, total: int) -> tuple[float, float]:
    """Jobs/s from the first to the last completion, and worker CPU µs per job (process CPU
    of the handling processes between their first and last job, as they report it)."""
    procs = start_workers(lib, n_procs)
    try:
        deadline = time.monotonic() + 600
        while counts(lib) == 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{lib.name}: workers never started")
            await asyncio.sleep(0.01)
        done = counts(lib)
        while done < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{lib.name}: only {done}/{total} processed")
            await asyncio.sleep(0.02)
            done = counts(lib)
        await asyncio.sleep(0.15)  # let every reporter write its final span
    finally:
        loadgen.stop_processes(procs)
    # Rate from the first job any worker handled to the last one (times kept by the workers).
    r = sync_redis.Redis.from_url(REDIS_URL)
    spans = [
        tuple(map(float, v.split()))
        for v in r.mget(list(r.scan_iter(match=f"bench:{lib.tag}:span:*")))
        if v
    ]
    span = max(s[1] for s in spans) - min(s[0] for s in spans)
    # CPU from each process's first to its last job, over the jobs handled after its first.
    cpu = sum(s[3] - s[2] for s in spans)
    jobs = sum(s[4] - 1 for s in spans)
    per_job = cpu / jobs * 1e6 if jobs > 0 else float("nan")
    return total / span, per_job


async def latency(lib: Lib) -> tuple[float, float]:
    procs = start_workers(lib, 1)
    r = sync_redis.Redis.from_url(REDIS_URL)
    try:
        await lib.enqueue_one(None)  # warm-up: wait until the worker handles a job
        while counts(lib) < 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        for _ in range(N_LATENCY):
            await lib.enqueue_one(time.time())
            await asyncio.sleep(0.01)
        while counts(lib) < N_LATENCY + 1 or r.llen(f"bench:{lib.tag}:lat") < N_LATENCY:
            await asyncio.sleep(0.05)
        lat = sorted(float(x) * 1000 for x in r.lrange(f"bench:{lib.tag}:lat", 0, -1))
    finally:
        loadgen.stop_processes(procs)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return statistics.median(lat), p99


async def single_enqueues(libs: list[Lib]) -> dict[str, list[float]]:
    """Awaited single enqueues per second, each round's, per library (see the module doc)."""
    for lib in libs:
        clean(lib)
        await _singles(lib, N_WARMUP)
        clean(lib)
    rates: dict[str, list[float]] = {lib.tag: [] for lib in libs}
    for r in range(SINGLE_ROUNDS):
        shift = r % len(libs)
        for lib in libs[shift:] + libs[:shift]:
            t = await timed(functools.partial(_singles, lib, N_SINGLE))
            rates[lib.tag].append(N_SINGLE / t)
            clean(lib)
    return rates


async def run_lib(lib: Lib) -> dict[str, float]:
    out: dict[str, float] = {}
    clean(lib)
    t = await timed(lambda: lib.enqueue_batch(N_BATCH))
    out["enqb"] = N_BATCH / t
    out["p1"], out["cpu1"] = await process(lib, 1, N_BATCH)
    clean(lib)
    await lib.enqueue_batch(N_BATCH)
    out["p2"], out["cpu2"] = await process(lib, 2, N_BATCH)
    clean(lib)
    out["p50"], out["p99"] = await latency(lib)
    clean(lib)
    return out


async def run_all(libs: list[Lib]) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """Every library set up once, in one event loop: the single-enqueue phase across all of
    them, then each library's own runs."""
    for lib in libs:
        await lib.setup()
    try:
        print("… single enqueues, all libraries in turn", file=sys.stderr, flush=True)
        singles = await single_enqueues(libs)
        results: dict[str, dict[str, float]] = {}
        for lib in libs:
            print(f"… {lib.name}", file=sys.stderr, flush=True)
            results[lib.tag] = await run_lib(lib)
            results[lib.tag]["enq1"] = statistics.median(singles[lib.tag])
    finally:
        for lib in libs:
            await lib.close()
    return results, singles


async def _singles(lib: Lib, n: int) -> None:
    for _ in range(n):
        await lib.enqueue_one(None)


def ping_round_trip_us(url: str, n: int = 5000) -> float:
    """Median of five timings of ``n`` bare ``PING`` round trips on a raw socket, in µs: the
    floor under any client's awaited call in the calling process's placement."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(6):  # the first is a warm-up
            t0 = time.perf_counter()
            for _ in range(n):
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                if sock.recv(64) != b"+PONG\r\n":
                    raise SystemExit("unexpected reply to PING")
            times.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(times[1:])


async def _singles_json(names: list[str]) -> None:
    """``--singles-json``: only the single-enqueue phase, then a bare ``PING``'s round trip;
    one JSON line on stdout (for ``placement``, which runs this pinned to a CPU)."""
    libs = [lib for lib in all_libs() if lib.tag in names]
    for lib in libs:
        await lib.setup()
    try:
        rates = await single_enqueues(libs)
    finally:
        for lib in libs:
            await lib.close()
    print(json.dumps({"rates": rates, "ping_us": ping_round_trip_us(REDIS_URL)}))


def _private_redis_module() -> Any:
    """``tests/private_redis.py`` (standard library only), loaded from its file: the repository
    root stays off ``sys.path`` here, as this folder does."""
    path = HERE.parent / "tests" / "private_redis.py"
    spec = importlib.util.spec_from_file_location("bench_private_redis", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def placement(names: list[str]) -> list[tuple[str, dict[str, Any]]] | str:
    """The single-enqueue phase with the client on Redis's CPU and on the other one (see the
    module doc). Returns each placement's results, or why it was not run."""
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        return "needs two CPUs this process may run on"
    if shutil.which("redis-server") is None:
        return "needs redis-server on PATH"
    cpus = sorted(os.sched_getaffinity(0))[:2]
    redis = _private_redis_module().PrivateRedis(APPS / "private-redis", cpu=cpus[0])
    try:
        redis.start(timeout=30)
        out: list[tuple[str, dict[str, Any]]] = []
        for label, cpu in (("same CPU as Redis", cpus[0]), ("other CPU", cpus[1])):
            print(f"… single enqueues, {label}", file=sys.stderr, flush=True)
            done = subprocess.run(
                [sys.executable, __file__, "--singles-json", *names],
                env={**os.environ, "BENCH_REDIS_URL": redis.url},
                preexec_fn=functools.partial(os.sched_setaffinity, 0, {cpu}),
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise SystemExit(f"single enqueues ({label}) failed:\n{done.stderr}")
            out.append((label, json.loads(done.stdout.splitlines()[-1])))
        return out
    finally:
        redis.stop()


async def _count_enqueues(n: int) -> None:
    """Warm up, then ``n`` awaited enqueues; the set-up costs the same for every ``n``."""
    lib = Ours()
    await lib.setup()
    try:
        for _ in range(50):
            await lib.enqueue_one(None)
        for _ in range(n):
            await lib.enqueue_one(None)
    finally:
        await lib.queue.close()
        await lib.close()
        clean(lib)


def all_libs() -> list[Lib]:
    """Every library, in table order."""
    return [Ours(), Dramatiq(), Taskiq(), Saq()]


def main() -> None:
    import uvloop

    libs = {lib.tag: lib for lib in all_libs()}
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("libraries", nargs="*", help=f"some of {', '.join(libs)} (default: all)")
    ap.add_argument(
        "--count-enqueues",
        type=int,
        metavar="N",
        help="only N single awaited enqueues of ours, for an instruction count: run under "
        "valgrind --tool=callgrind with two N and subtract (see bench/RESULTS.md)",
    )
    ap.add_argument(
        "--no-placement",
        action="store_true",
        help="skip the single enqueues with the client on Redis's CPU and on the other one",
    )
    ap.add_argument("--singles-json", action="store_true", help=argparse.SUPPRESS)
    options = ap.parse_args()
    if options.count_enqueues is not None:
        uvloop.run(_count_enqueues(options.count_enqueues))
        return
    names = options.libraries or list(libs)
    if unknown := set(names) - set(libs):
        ap.error(f"unknown libraries: {', '.join(sorted(unknown))}")
    if options.singles_json:
        uvloop.run(_singles_json(names))
        return
    results, singles = uvloop.run(run_all([libs[name] for name in names]))
    header = (
        f"{'library':<15}{'enqueue/s':>11}{'batched/s':>11}{'1 proc/s':>10}"
        f"{'µs CPU/job':>11}{'2 procs/s':>11}{'p50 ms':>8}{'p99 ms':>8}"
    )
    print(
        f"\nno-op jobs, Redis {REDIS_URL}; single={N_SINGLE} x {SINGLE_ROUNDS} interleaved "
        f"rounds (median), batch={N_BATCH}, latency={N_LATENCY} jobs at 100/s"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(
            f"{libs[name].name:<15}{r['enq1']:>11.0f}{r['enqb']:>11.0f}{r['p1']:>10.0f}"
            f"{r['cpu1']:>11.0f}{r['p2']:>11.0f}{r['p50']:>8.2f}{r['p99']:>8.2f}"
        )
    print("\nsingle enqueue/s, each round:")
    for name, rates in singles.items():
        print(f"  {libs[name].name:<15}" + " ".join(f"{x:>7.0f}" for x in rates))
    others = [r for n, r in results.items() if n != "arcana"]
    if "arcana" in results and others:
        ours = results["arcana"]
        best = max(others, key=lambda r: r["p1"])
        best_name = next(libs[n].name for n, r in results.items() if r is best)
        print(
            f"\nours / fastest other ({best_name}): 1 process {ours['p1'] / best['p1']:.2f}x, "
            f"2 processes {ours['p2'] / max(r['p2'] for r in others):.2f}x, "
            f"batched enqueue {ours['enqb'] / max(r['enqb'] for r in others):.2f}x, "
            f"single enqueue {ours['enq1'] / max(r['enq1'] for r in others):.2f}x"
        )
    if options.no_placement:
        return
    placed = placement(names)
    if isinstance(placed, str):
        print(f"\nsingle enqueue by placement: not run ({placed})")
        return
    print(
        f"\nsingle enqueue/s by placement: a private redis-server on one CPU, this client on the "
        f"same CPU or the other; {N_SINGLE} x {SINGLE_ROUNDS} interleaved rounds (median)"
    )
    head = f"{'placement':<19}{'PING µs':>8}" + "".join(f"{libs[n].name:>15}" for n in names)
    head += "  ours / fastest other" if "arcana" in names and len(names) > 1 else ""
    print(head)
    print("-" * len(head))
    for label, got in placed:
        medians = {n: statistics.median(got["rates"][n]) for n in names}
        row = f"{label:<19}{got['ping_us']:>8.1f}" + "".join(f"{medians[n]:>15.0f}" for n in names)
        if "arcana" in names and len(names) > 1:
            best = max(v for n, v in medians.items() if n != "arcana")
            row += f"  {medians['arcana'] / best:>20.2f}x"
        print(row)


if __name__ == "__main__":
    main()
