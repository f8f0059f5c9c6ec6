"""Real ``arcana worker`` processes: ``kill -9`` mid-batch loses nothing, SIGTERM drains, and
the ``arcana jobs`` commands."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from arcana.bootstrap import App
from arcana.config import Settings
from arcana.domain.jobs import JobRequest, JobStatus
from arcana.lifecycle import Lifecycle
from tests.conftest import REDIS_URL, base_settings, wait_for
from tests.process import ArcanaProcess, arcana_bin

pytestmark = pytest.mark.slow


def worker_env(settings: Settings) -> dict[str, str]:
    env = {
        "ARCANA_DATABASE_URL": settings.database.url.get_secret_value(),
        "ARCANA_VAR_DIR": str(settings.var_dir),
        "ARCANA_JWT_SECRET": "test-secret-" + "x" * 40,
        "ARCANA_LOG_JSON": "false",
        "ARCANA_JOB_LEASE_SECONDS": "2",
        "ARCANA_JOB_REAP_INTERVAL": "0.2",
        "ARCANA_JOB_POLL_INTERVAL": "0.1",
        "ARCANA_SCHEDULER_ENABLED": "false",
        "ARCANA_SHUTDOWN_TIMEOUT": "10",
    }
    if settings.redis.url:
        env["ARCANA_REDIS_URL"] = settings.redis.url.get_secret_value()
        env["ARCANA_REDIS_PREFIX"] = settings.redis.prefix
    return env


@pytest.fixture(params=["redis", "sqlite"])
def wsettings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    extra = {}
    if request.param == "redis":
        prefix: str = request.getfixturevalue("redis_session")
        extra = {"redis_url": REDIS_URL, "redis_prefix": f"{prefix}-{uuid.uuid4().hex[:8]}"}
    return base_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'arcana.db'}",
        var_dir=tmp_path / "var",
        **extra,
    )


@pytest.fixture
async def wc(wsettings: Settings) -> AsyncIterator[App]:
    c_process = Lifecycle.build(wsettings)
    c = c_process.app
    await c_process.start()  # migrates the SQLite file the workers share
    try:
        yield c
    finally:
        await c_process.stop()


async def test_kill_9_mid_batch_then_new_worker_completes_every_job(
    wc: App, wsettings: Settings, tmp_path: Path
) -> None:
    total = 400
    await wc.queue.enqueue_many(
        [
            JobRequest("system.echo", {"message": str(i), "sleep_seconds": 0.05})
            for i in range(total)
        ]
    )
    env = worker_env(wsettings)
    first = ArcanaProcess(["worker", "--concurrency", "8"], env, tmp_path, "w1.log").start()
    try:

        async def busy() -> bool:
            s = await wc.queue.stats()
            return s.succeeded >= 40 and s.running > 0

        await wait_for(busy, timeout=60)
    finally:
        first.kill()
    stranded = await wc.queue.stats()
    assert stranded.running > 0  # it died holding leases
    assert stranded.succeeded < total
    with ArcanaProcess(["worker", "--concurrency", "8"], env, tmp_path, "w2.log") as second:

        async def all_done() -> bool:
            return (await wc.queue.stats()).succeeded == total

        await wait_for(all_done, timeout=90, interval=0.2)
        assert second.proc is not None
        assert second.proc.poll() is None
    final = await wc.queue.stats()
    assert (final.running, final.dead, sum(final.depth.values())) == (0, 0, 0)
    # Every job ran; only jobs that were leased when the worker died may have run twice.
    runs = Counter(
        m.group(1)
        for name in ("w1.log", "w2.log")
        for m in re.finditer(r"echo: (\d+)\b", (tmp_path / name).read_text(errors="replace"))
    )
    assert set(runs) == {str(i) for i in range(total)}
    assert sum(1 for n in runs.values() if n > 1) <= stranded.running


async def test_sigterm_finishes_in_flight_jobs_and_exits_0(
    wc: App, wsettings: Settings, tmp_path: Path
) -> None:
    await wc.queue.enqueue_many(
        [JobRequest("system.echo", {"sleep_seconds": 1.0}) for _ in range(10)]
    )
    proc = ArcanaProcess(["worker", "--concurrency", "4"], worker_env(wsettings), tmp_path)
    proc.start()

    async def four_running() -> bool:
        return (await wc.queue.stats()).running == 4

    await wait_for(four_running, timeout=60)
    proc.signal(signal.SIGTERM)
    assert proc.proc is not None
    assert proc.proc.wait(30) == 0, proc.log()
    s = await wc.queue.stats()
    assert (s.running, s.succeeded, sum(s.depth.values())) == (0, 4, 6)


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [arcana_bin(), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=60,
    )


def test_jobs_commands(tmp_path: Path) -> None:
    env = {
        "ARCANA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "ARCANA_VAR_DIR": str(tmp_path / "var"),
    }
    out = run_cli(
        [
            "jobs",
            "enqueue",
            "system.echo",
            "--payload",
            '{"message": "hi", "fail_times": 9}',
            "--priority",
            "high",
            "--max-retries",
            "0",
        ],
        env,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    stats = json.loads(run_cli(["jobs", "stats", "--json"], env, tmp_path).stdout)
    assert stats["depth"]["HIGH"] == 1

    for bad in (
        ["jobs", "enqueue", "no.such.type"],
        ["jobs", "retry", job_id],  # not dead
    ):
        out = run_cli(bad, env, tmp_path)
        assert out.returncode == 1, (bad, out.stdout, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert run_cli(["jobs", "enqueue"], env, tmp_path).returncode == 2

    dead = run_cli(["jobs", "dead", "--json"], env, tmp_path)
    assert dead.returncode == 0
    assert json.loads(dead.stdout)["total"] == 0


@pytest.mark.parametrize("wsettings", ["sqlite"], indirect=True)  # the same on every backend
async def test_alive_file_is_touched_while_running_and_removed_on_exit(
    wc: App, wsettings: Settings, tmp_path: Path
) -> None:
    """What the worker Deployment's liveness probe reads (``deploy/k8s/worker.yaml``)."""
    alive = tmp_path / "alive"
    env = {**worker_env(wsettings), "ARCANA_WORKER_ALIVE_FILE": str(alive)}
    with ArcanaProcess(["worker"], env, tmp_path, "alive.log") as proc:
        job = await wc.queue.enqueue(JobRequest("system.echo", {"message": "up"}))

        async def ran() -> bool:
            got = await wc.queue.get(job.id)
            return got is not None and got.status is JobStatus.SUCCEEDED

        await wait_for(ran, timeout=60)  # the worker is running
        assert alive.exists()
        os.utime(alive, ns=(0, 0))  # as if last touched in 1970: the loop touches it again
        await wait_for(lambda: alive.exists() and alive.stat().st_mtime_ns > 0, timeout=30)
        proc.signal(signal.SIGTERM)
        assert proc.proc is not None
        assert proc.proc.wait(30) == 0, proc.log()
    assert not alive.exists()


def test_an_alive_file_that_cannot_be_written_stops_the_worker_at_once(tmp_path: Path) -> None:
    env = {
        "ARCANA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'w.db'}",
        "ARCANA_VAR_DIR": str(tmp_path / "var"),
        "ARCANA_WORKER_ALIVE_FILE": str(tmp_path / "no-such-folder" / "alive"),
    }
    out = run_cli(["worker"], env, tmp_path)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "ARCANA_WORKER_ALIVE_FILE" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
