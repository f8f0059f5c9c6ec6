"""CPU per stock change on a real ``arcana serve`` over PostgreSQL, counted from ``/proc``.

    .venv/bin/python bench/stock_cpu.py --database-url postgresql+asyncpg://postgres@HOST:PORT/DB

The database must exist and hold products (``arcana demo-data``; it is migrated first). One
``arcana serve`` (no Redis: in-process cache and event dispatch) is driven by ``wrk`` with
bench-http's spread scenario (``+1`` on each of ``--spread`` products in a fixed shuffled order,
64 connections) for ``--duration`` seconds, ``--rounds`` times. Per successful change it prints
CPU time (user + system) from ``/proc``, not wall time:

- ``server``: the ``arcana serve`` process;
- ``postgres``: every process of the PostgreSQL cluster (the postmaster's tree, with the CPU of
  children that ended while it ran, such as autovacuum workers): run it on a cluster of its own
  for a figure that is this server's alone;
- ``backends``: the backends connected to this database only (meaningful on a shared cluster).

Each round is measured until the relay has delivered every outbox row the round wrote, so the
relay's statements are counted with the changes that caused them. Also per change: WAL
records, bytes and flushes (``pg_stat_wal``, the whole cluster), the
``pg_stat_user_tables`` counters of ``products`` and ``outbox`` (updates, HOT updates, inserts,
deletes) and, where ``pg_stat_statements`` is loaded, each statement's calls and execution time.
"""

from __future__ import annotations

import loadgen  # first: it takes this folder off sys.path (see bench/loadgen.py)

# isort: split
import argparse
import asyncio
import importlib.util
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from loadgen import BIN, process_tree_cpu, run_wrk, wrk_cycle_lua

TICK = os.sysconf("SC_CLK_TCK")


def admin_token(env: dict[str, str], work: Path, base: str) -> str:
    """bench/http_api.py's (this folder is off ``sys.path``: see bench/loadgen.py)."""
    spec = importlib.util.spec_from_file_location("bench_http_api", loadgen.HERE / "http_api.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.admin_token(env, work, base))


def _stat(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def cluster_cpu(postmaster: int) -> float:
    """CPU seconds of the postmaster's tree, children that already ended included (the
    postmaster waits for them, so their time is in its ``cutime``/``cstime``)."""
    fields = _stat(postmaster)
    reaped = (int(fields[13]) + int(fields[14])) / TICK
    return process_tree_cpu(postmaster) + reaped


def cluster_system_cpu(postmaster: int) -> float:
    """The kernel's share of ``cluster_cpu`` (system time: WAL writes and flushes, sockets)."""
    total = 0.0
    todo = [postmaster]
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat(int(entry))[1]), []).append(int(entry))
            except OSError:
                continue
    while todo:
        pid = todo.pop()
        try:
            fields = _stat(pid)
        except OSError:
            continue
        total += int(fields[12]) / TICK
        todo += children.get(pid, [])
    return total + int(_stat(postmaster)[14]) / TICK


def pids_cpu(pids: set[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for pid in pids:
        try:
            fields = _stat(pid)
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / TICK
    return out


async def _query(dsn: str, sql: str) -> list[Any]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def query(dsn: str, sql: str) -> list[Any]:
    return asyncio.run(_query(dsn, sql))


def snapshot(dsn: str, postmaster: int) -> dict[str, Any]:
    backends = {
        int(r["pid"])
        for r in query(
            dsn,
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND "
            "pid <> pg_backend_pid()",
        )
    }
    tables = {
        r["relname"]: dict(r)
        for r in query(
            dsn,
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM "
            "pg_stat_user_tables WHERE relname IN ('products', 'outbox')",
        )
    }
    wal = dict(query(dsn, "SELECT wal_records, wal_bytes, wal_sync FROM pg_stat_wal")[0])
    statements: dict[str, tuple[int, float]] = {}
    try:
        for r in query(
            dsn,
            "SELECT query, calls, total_exec_time FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        ):
            statements[r["query"]] = (int(r["calls"]), float(r["total_exec_time"]))
    except asyncpg.PostgresError:
        pass
    return {
        "cluster": cluster_cpu(postmaster),
        "cluster_system": cluster_system_cpu(postmaster),
        "backends": pids_cpu(backends),
        "tables": tables,
        "wal": wal,
        "statements": statements,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", required=True, help="postgresql+asyncpg://…")
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--spread", type=int, default=1000)
    ap.add_argument("--statements", type=int, default=8, help="top statements shown")
    args = ap.parse_args()
    dsn = args.database_url.replace("+asyncpg", "", 1)
    work = Path(tempfile.mkdtemp(prefix="arcana-stock-cpu-"))
    env = loadgen.arcana_env(work, loadgen.free_port(), database_url=args.database_url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run(
            [str(BIN / "arcana"), "migrate"], env=env, cwd=work, check=True, capture_output=True
        )
        data_dir = str(query(dsn, "SHOW data_directory")[0][0])
        postmaster = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
        base = loadgen.start_serve(env, work, procs)
        server = procs[-1].pid
        token = admin_token(env, work, base)
        ids: list[str] = []
        page = 0
        while len(ids) < args.spread:
            listed = httpx.get(f"{base}/api/v1/products?size=100&page={page}").json()["data"]
            if not listed:
                break
            ids += [item["id"] for item in listed]
            page += 1
        ids = ids[: args.spread]
        random.Random(16).shuffle(ids)
        writes = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        lua = wrk_cycle_lua(
            "POST", writes, [(f"/api/v1/products/{i}/stock", '{"quantity_change": 1}') for i in ids]
        )
        url = f"{base}/api/v1/products/{ids[0]}/stock"
        run_wrk(url, 2, args.connections, lua)  # warm-up: connections, prepared statements
        loadgen.wait_outbox_drained(env)
        rows = []
        for n in range(args.rounds):
            server_before = process_tree_cpu(server)
            before = snapshot(dsn, postmaster)
            result = run_wrk(url, args.duration, args.connections, lua)
            loadgen.wait_outbox_drained(env)
            time.sleep(0.3)  # the relay's last settle and the server's last answers
            after = snapshot(dsn, postmaster)
            server_used = process_tree_cpu(server) - server_before
            changes = result.requests - result.errors
            # Backends that lived through the round (the pool's, the relay's, LISTEN).
            b0, b1 = before["backends"], after["backends"]
            backends_used = sum(b1[p] - b0[p] for p in b0.keys() & b1.keys())
            per = 1e6 / changes
            row = {
                "changes": changes,
                "errors": result.errors,
                "server": server_used * per,
                "postgres": (after["cluster"] - before["cluster"]) * per,
                "postgres_system": (after["cluster_system"] - before["cluster_system"]) * per,
                "backends": backends_used * per,
            }
            row["total"] = row["server"] + row["postgres"]
            rows.append(row)
            print(
                f"round {n + 1}: {changes} changes ({result.errors} non-2xx), per change: "
                f"server {row['server']:.0f} µs, postgres {row['postgres']:.0f} µs "
                f"(system {row['postgres_system']:.0f} µs; "
                f"this database's backends {row['backends']:.0f} µs), "
                f"total {row['total']:.0f} µs",
                flush=True,
            )
            w = {k: (after["wal"][k] - before["wal"][k]) / changes for k in after["wal"]}
            print(
                f"  WAL (the whole cluster) per change: {w['wal_records']:.1f} records, "
                f"{w['wal_bytes']:.0f} bytes, {w['wal_sync']:.2f} flushes (fsync)"
            )
            for table in ("products", "outbox"):
                b, a = before["tables"].get(table), after["tables"].get(table)
                if a is None or b is None:
                    continue
                d = {k: (a[k] - b[k]) / changes for k in a if k != "relname"}
                print(
                    f"  {table}: per change ins {d['n_tup_ins']:.2f} upd {d['n_tup_upd']:.2f} "
                    f"(HOT {d['n_tup_hot_upd']:.2f}) del {d['n_tup_del']:.2f}"
                )
            deltas = []
            for text, (calls, ms) in after["statements"].items():
                c0, ms0 = before["statements"].get(text, (0, 0.0))
                if calls > c0:
                    deltas.append((ms - ms0, calls - c0, text))
            for ms, calls, text in sorted(deltas, reverse=True)[: args.statements]:
                print(
                    f"  {ms * 1000 / changes:7.1f} µs/change {calls / changes:6.3f} calls/change"
                    f"  {' '.join(text.split())[:110]}"
                )
        print(
            "median per change: "
            + ", ".join(
                f"{k} {statistics.median(r[k] for r in rows):.0f} µs"
                for k in ("server", "postgres", "total")
            )
        )
    finally:
        loadgen.stop_processes(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
