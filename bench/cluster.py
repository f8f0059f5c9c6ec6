# ruff: noqa: E402  (sys.path is cleaned before the imports)
"""Queue partitions on a real 3-master Redis Cluster: 1 partition vs 3.

    make bench-cluster                       # or: .venv/bin/python bench/cluster.py --jobs 20000
    .venv/bin/python bench/cluster.py --jobs 2000 --processes 1     # a quick check

Starts a private local cluster (6 ``redis-server``: 3 masters + 3 replicas, loopback, free
ports, no persistence). For each layout: fills the queue with no-op jobs (batched enqueue),
counts the keys each master holds, then drains it with ``--processes`` worker processes that
lease batches and acknowledge them (no handler work, so Redis is what is measured), and reads
``INFO cpu`` of every master before and after. Prints jobs/s and, per master, the CPU seconds
spent and the CPU milliseconds per 1,000 jobs: with 1 partition one master does all the work;
with 3 each does about a third. What N masters on N machines carry is about N times what the
busiest master of the 3-partition run carries per CPU second (see the printed estimate).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's ``http`` package for a script started
# from this folder: keep the folder off sys.path before anything imports ``http``.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import json
import multiprocessing
import tempfile
import time
import uuid
from typing import Any

from arcana.adapters.jobqueue.layout import redis_queue
from arcana.adapters.redis_client import connect_redis
from arcana.domain.jobs import JobQueue, JobRequest
from tests.rediscluster.cluster import LocalCluster, Node


def make_queue(url: str, prefix: str, partitions: int) -> JobQueue:
    return redis_queue(connect_redis(url), prefix, partitions, finished_ttl=3600)


async def _drain(url: str, prefix: str, partitions: int, total: int, workers: int) -> int:
    """Lease and acknowledge until the queue is empty; returns the jobs this process did."""
    queue = make_queue(url, prefix, partitions)
    done = 0
    idle = 0

    async def one(name: str) -> None:
        nonlocal done, idle
        while idle < 3:
            jobs = await queue.fetch(name, 64, 30)
            if not jobs:
                idle += 1
                await asyncio.sleep(0.05)
                continue
            idle = 0
            await queue.complete(name, [j.id for j in jobs])
            done += len(jobs)

    await asyncio.gather(*(one(f"{uuid.uuid4().hex[:6]}-{i}") for i in range(workers)))
    return done


def drain_process(args: tuple[str, str, int, int, int]) -> int:
    return asyncio.run(_drain(*args))


async def fill(url: str, prefix: str, partitions: int, total: int) -> None:
    queue = make_queue(url, prefix, partitions)
    for start in range(0, total, 500):
        n = min(500, total - start)
        await queue.enqueue_many([JobRequest("system.noop") for _ in range(n)])


def cpu_of(node: Node) -> float:
    info = dict(line.split(":", 1) for line in node.cli("INFO", "cpu").split() if ":" in line)
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def keys_of(node: Node) -> int:
    return int(node.cli("DBSIZE").strip() or 0)


def run_layout(
    cluster: LocalCluster, partitions: int, jobs: int, processes: int, workers: int
) -> dict[str, Any]:
    prefix = f"bench-{partitions}p-{uuid.uuid4().hex[:6]}"
    masters = cluster.masters()
    keys_before = [keys_of(m) for m in masters]
    asyncio.run(fill(cluster.url, prefix, partitions, jobs))
    keys = [keys_of(m) - b for m, b in zip(masters, keys_before, strict=True)]
    cpu_before = [cpu_of(m) for m in masters]
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        done = sum(
            pool.map(drain_process, [(cluster.url, prefix, partitions, jobs, workers)] * processes)
        )
    # The idle polls at the end (3 x 50 ms) are not work: leave them out.
    elapsed = max(time.perf_counter() - t0 - 0.15, 1e-6)
    cpu = [cpu_of(m) - b for m, b in zip(masters, cpu_before, strict=True)]
    return {
        "partitions": partitions,
        "jobs": done,
        "seconds": round(elapsed, 2),
        "jobs_per_s": round(done / elapsed),
        "masters": [
            {
                "port": m.port,
                "keys": k,
                "cpu_s": round(c, 2),
                "cpu_ms_per_1000_jobs": round(c * 1000 / max(done, 1) * 1000, 1),
            }
            for m, k, c in zip(masters, keys, cpu, strict=True)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    parser.add_argument("--workers", type=int, default=4, help="fetch loops per process")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="arcana-bench-cluster-") as tmp:
        cluster = LocalCluster(Path(tmp))
        try:
            cluster.start()
            results = [
                run_layout(cluster, p, args.jobs, args.processes, args.workers) for p in (1, 3)
            ]
        finally:
            cluster.stop()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(
            f"\n{r['partitions']} partition(s): {r['jobs']} jobs in {r['seconds']} s "
            f"= {r['jobs_per_s']} jobs/s"
        )
        print("  master   keys     CPU s   CPU ms / 1000 jobs")
        for m in r["masters"]:
            print(
                f"  {m['port']:>6} {m['keys']:>6} {m['cpu_s']:>9} {m['cpu_ms_per_1000_jobs']:>12}"
            )
    three = results[-1]
    busiest = max(m["cpu_s"] for m in three["masters"])
    if busiest > 0:
        per_master = three["jobs"] / 3 / busiest
        print(
            f"\nOne master serves ~{per_master:,.0f} jobs per CPU second of its own (3-partition "
            f"run); N masters on N machines, one partition each, carry ~N x {per_master:,.0f} "
            "jobs/s before Redis is the limit."
        )


if __name__ == "__main__":
    main()
