"""``ARCANA_QUEUE_PARTITIONS`` or ``ARCANA_EVENTS_PARTITIONS`` changed while the old layout
still holds jobs to run or events not yet handled: the process refuses to start instead of
leaving them unseen (real Redis, a prefix per test)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from arcana.adapters.events.bus import event_streams
from arcana.adapters.events.layout import check_events_layout, events_layout
from arcana.adapters.events.redis_stream import GROUP
from arcana.adapters.jobqueue.layout import (
    RecordedLayoutWrites,
    RedisQueue,
    check_queue_layout,
    queue_layout,
    redis_queue,
)
from arcana.adapters.partition_layout import (
    FIELD,
    Layout,
    LayoutChanged,
    check_layout,
    keep_present,
)
from arcana.config import Settings
from arcana.domain.jobs import Job, JobQueue, JobRequest, JobStatus, Priority
from arcana.errors import InvalidState, NotFound
from arcana.lifecycle import Lifecycle
from tests.conftest import REDIS_URL, base_settings, wait_for
from tests.process import arcana_bin, free_port


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def prefix(redis_session: str) -> str:
    return f"{redis_session}-layout-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def queue(redis: Redis) -> AsyncIterator[Callable[[str, int], RedisQueue]]:
    """``queue(prefix, partitions)``; every queue made is closed at the end."""
    made: list[JobQueue] = []

    def make(prefix: str, partitions: int) -> RedisQueue:
        queue = redis_queue(redis, prefix, partitions, finished_ttl=3600)
        made.append(queue)
        return queue

    yield make
    for q in made:
        await q.close()


async def recorded(redis: Redis, prefix: str) -> int | None:
    raw = await redis.hget(queue_layout(redis, prefix).key, FIELD)
    return None if raw is None else int(raw)


async def recorded_events(redis: Redis, prefix: str) -> int | None:
    raw = await redis.hget(events_layout(redis, prefix).key, FIELD)
    return None if raw is None else int(raw)


async def test_a_new_queue_records_its_count(redis: Redis, prefix: str) -> None:
    await check_queue_layout(redis, prefix, 3)
    assert await recorded(redis, prefix) == 3
    await check_queue_layout(redis, prefix, 3)  # the same count again: nothing to check
    assert await recorded(redis, prefix) == 3


async def test_jobs_under_the_historical_keys_keep_a_new_count_from_starting(
    redis: Redis, prefix: str, queue: Callable[[str, int], JobQueue]
) -> None:
    """A queue from before the count was recorded: its jobs are under one partition."""
    job = await queue(prefix, 1).enqueue(JobRequest("system.noop"))
    with pytest.raises(LayoutChanged) as raised:
        await check_queue_layout(redis, prefix, 4)
    assert "ARCANA_QUEUE_PARTITIONS is 4" in str(raised.value)
    assert "1 job(s) still to run" in str(raised.value)
    assert "ARCANA_QUEUE_PARTITIONS=1" in str(raised.value)
    assert await recorded(redis, prefix) is None  # nothing changed
    assert await queue(prefix, 1).get(job.id) is not None


async def test_the_new_count_starts_once_the_old_layout_is_drained(
    redis: Redis,
    prefix: str,
    queue: Callable[[str, int], JobQueue],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Delayed and running jobs hold the change back; dead ones do not (they are logged: a
    dead job that fails again on retry would never drain)."""
    await check_queue_layout(redis, prefix, 3)
    old = queue(prefix, 3)
    await old.enqueue(JobRequest("system.noop", delay_seconds=0.001))
    assert (await old.stats()).scheduled == 1
    with pytest.raises(LayoutChanged):
        await check_queue_layout(redis, prefix, 1)  # a delayed job counts
    doomed = await old.enqueue(JobRequest("system.noop", max_retries=0))
    await old.reap()  # the delayed job is due by now: queued
    leased = await old.fetch("w", 10, 30)
    assert {j.id for j in leased} >= {doomed.id}
    with pytest.raises(LayoutChanged):
        await check_queue_layout(redis, prefix, 1)  # running jobs count
    assert await recorded(redis, prefix) == 3
    await old.fail("w", doomed.id, "boom", 0)
    await old.complete("w", [j.id for j in leased if j.id != doomed.id])
    s = await old.stats()
    assert (sum(s.depth.values()), s.scheduled, s.running, s.dead) == (0, 0, 0, 1)
    with caplog.at_level(logging.WARNING, logger="arcana.layout"):
        await check_queue_layout(redis, prefix, 1)
    assert await recorded(redis, prefix) == 1
    assert any("1 dead job(s) stay under the old layout" in r.getMessage() for r in caplog.records)


def cli_env(prefix: str, tmp_path: Path) -> dict[str, str]:
    """An ``arcana`` command's environment: embedded SQLite, the shared Redis, ``prefix``."""
    return {
        "PATH": "/usr/bin:/bin",
        "ARCANA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "ARCANA_VAR_DIR": str(tmp_path / "var"),
        "ARCANA_REDIS_URL": REDIS_URL,
        "ARCANA_REDIS_PREFIX": prefix,
    }


def test_arcana_worker_or_serve_with_a_changed_count_exits_with_what_to_do(
    prefix: str, tmp_path: Path
) -> None:
    """What an operator sees: what to do on stderr, exit status 1, no traceback."""
    env = cli_env(prefix, tmp_path)
    enqueued = subprocess.run(
        [arcana_bin(), "jobs", "enqueue", "system.noop"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert enqueued.returncode == 0, enqueued.stderr
    out = subprocess.run(
        [arcana_bin(), "worker"],
        env={**env, "ARCANA_QUEUE_PARTITIONS": "2"},
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 1, (out.stdout, out.stderr)
    last = out.stderr.strip().splitlines()[-1]  # after the start-up log lines
    assert "ARCANA_QUEUE_PARTITIONS is 2" in last, last
    assert "ARCANA_QUEUE_PARTITIONS=1" in last, last
    assert "Traceback" not in out.stderr
    served = subprocess.run(
        [arcana_bin(), "serve", "--port", str(free_port()), "--grpc-port", str(free_port())],
        env={**env, "ARCANA_QUEUE_PARTITIONS": "2"},
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert served.returncode == 1, (served.stdout, served.stderr)
    assert "ARCANA_QUEUE_PARTITIONS is 2" in served.stderr.strip().splitlines()[-1]


async def test_a_start_with_redis_unreachable_skips_the_check_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The service starts while Redis is down (reads and logins go on); the check waits for
    the next start instead of stopping this one."""
    settings = base_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        var_dir=tmp_path / "var",
        queue_partitions=2,
    )
    assert settings.effective_queue_backend == "redis"
    process = Lifecycle.build(settings)
    with caplog.at_level(logging.WARNING, logger="arcana.layout"):
        await process.start(enforce_layouts=True)
    try:
        assert any(
            "queue layout not checked: Redis unreachable at start-up" in r.getMessage()
            for r in caplog.records
        )
    finally:
        await process.stop()


async def test_a_command_with_another_count_only_says_which_layout_it_sees(
    redis: Redis, prefix: str, queue: Callable[[str, int], JobQueue], tmp_path: Path
) -> None:
    """How an operator lists the dead jobs left under an old count: a command (not ``serve``
    or ``worker``) with that count neither refuses to run nor records its count."""
    await check_queue_layout(redis, prefix, 2)
    await queue(prefix, 2).enqueue(JobRequest("system.noop"))  # an enforced start would refuse
    env = {**cli_env(prefix, tmp_path), "ARCANA_QUEUE_PARTITIONS": "1"}
    out = await asyncio.to_thread(
        subprocess.run,
        [arcana_bin(), "jobs", "dead"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (
        "ARCANA_QUEUE_PARTITIONS is 1, but the queue layout in use is recorded as 2 "
        "partition(s): this command sees what is stored under 1; jobs it enqueues or "
        "retries go to the recorded layout"
    ) in out.stderr
    assert await recorded(redis, prefix) == 2


async def dead_job(queue: JobQueue, request: JobRequest) -> Job:
    """``request`` enqueued, leased and failed with no retries left: dead."""
    job = await queue.enqueue(request)
    leased = await wait_for(lambda: queue.fetch("w", 10, 30))
    assert [j.id for j in leased] == [job.id]
    assert await queue.fail("w", job.id, "boom", 0) is JobStatus.DEAD
    return job


async def run_arcana(env: dict[str, str], cwd: Path, *args: str) -> str:
    out = await asyncio.to_thread(
        subprocess.run,
        [arcana_bin(), *args],
        env=env, capture_output=True, text=True, timeout=60, cwd=cwd,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_a_command_with_an_old_count_moves_a_retried_dead_job_to_the_recorded_layout(
    redis: Redis, prefix: str, queue: Callable[[str, int], RedisQueue], tmp_path: Path
) -> None:
    """A dead job left under the old count, retried with that count (the only one that lists
    it), runs again: it moves to the layout the workers run, with what it was enqueued with.
    A job enqueued by such a command goes there too."""
    await check_queue_layout(redis, prefix, 1)
    old, new = queue(prefix, 1), queue(prefix, 2)
    request = JobRequest(
        "system.echo", {"n": 7}, priority=Priority.HIGH, max_retries=0, unique_key="echo-7"
    )
    dead = await dead_job(old, request)
    await check_queue_layout(redis, prefix, 2)  # dead jobs do not hold the change back
    env = {**cli_env(prefix, tmp_path), "ARCANA_QUEUE_PARTITIONS": "1"}

    assert dead.id in await run_arcana(env, tmp_path, "jobs", "dead")
    assert f"queued {dead.id} (system.echo)" in await run_arcana(
        env, tmp_path, "jobs", "retry", dead.id
    )
    assert await old.get(dead.id) is None
    assert (await old.stats()).dead == 0
    moved = await new.get(dead.id)
    assert moved is not None
    assert (moved.status, moved.payload, moved.priority) == (
        JobStatus.QUEUED,
        {"n": 7},
        Priority.HIGH,
    )
    assert (moved.max_retries, moved.unique_key) == (0, "echo-7")
    assert [j.id for j in await new.fetch("w", 10, 30)] == [dead.id]

    enqueued = (await run_arcana(env, tmp_path, "jobs", "enqueue", "system.noop")).strip()
    assert await new.get(enqueued) is not None
    assert await old.get(enqueued) is None
    assert await recorded(redis, prefix) == 2


async def test_a_move_cut_short_is_finished_by_the_next_retry(
    prefix: str, queue: Callable[[str, int], RedisQueue]
) -> None:
    """Enqueued in the recorded layout, not yet deleted from the old one (the command died in
    between): the next retry finds the id taken, deletes the old copy, and leaves one job.
    Here the old layout is the partitioned one."""
    old, new = queue(prefix, 3), queue(prefix, 1)
    dead = await dead_job(old, JobRequest("system.noop", max_retries=0))
    await new.enqueue(JobRequest("system.noop", max_retries=0), job_id=dead.id)
    moved = await RecordedLayoutWrites(old, new).retry_dead(dead.id)
    assert (moved.id, moved.existing) == (dead.id, False)
    assert await old.get(dead.id) is None
    s = await new.stats()
    assert (sum(s.depth.values()), s.dead) == (1, 0)


async def test_a_dead_job_whose_unique_key_is_held_in_the_recorded_layout_stays_put(
    prefix: str, queue: Callable[[str, int], RedisQueue]
) -> None:
    old, new = queue(prefix, 1), queue(prefix, 2)
    dead = await dead_job(old, JobRequest("system.noop", max_retries=0, unique_key="k"))
    holder = await new.enqueue(JobRequest("system.noop", unique_key="k"))
    with pytest.raises(InvalidState, match=f"held by active job {holder.id}"):
        await RecordedLayoutWrites(old, new).retry_dead(dead.id)
    still = await old.get(dead.id)
    assert still is not None
    assert still.status is JobStatus.DEAD
    assert await new.get(dead.id) is None


async def test_other_jobs_are_retried_where_they_are_with_the_usual_errors(
    prefix: str, queue: Callable[[str, int], RedisQueue]
) -> None:
    old, new = queue(prefix, 1), queue(prefix, 2)
    writes = RecordedLayoutWrites(old, new)
    waiting = await old.enqueue(JobRequest("system.noop"))
    with pytest.raises(InvalidState, match="only dead jobs"):
        await writes.retry_dead(waiting.id)
    with pytest.raises(NotFound):
        await writes.retry_dead("no-such-job")
    dead_there = await dead_job(new, JobRequest("system.noop", max_retries=0))
    retried = await writes.retry_dead(dead_there.id)
    assert (retried.status, retried.retry_count) == (JobStatus.QUEUED, 1)
    assert await old.discard_dead(waiting.id) is False  # only a dead job is ever deleted
    assert await old.get(waiting.id) is not None


# -- events ------------------------------------------------------------------------------------
async def test_a_new_stream_records_its_count(redis: Redis, prefix: str) -> None:
    await check_events_layout(redis, prefix, 4)
    assert await recorded_events(redis, prefix) == 4
    await check_events_layout(redis, prefix, 4)
    assert await recorded_events(redis, prefix) == 4


async def test_events_not_yet_handled_keep_a_new_count_from_starting(
    redis: Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Published and never read (no group yet), then read and not acknowledged: both hold
    the change back. Handled ones do not, and dead ones are logged."""
    [stream] = event_streams(prefix, 1)  # the historical key, from before the count was kept
    await redis.xadd(stream, {"e": "1"})
    await redis.xadd(stream, {"e": "2"})
    with pytest.raises(LayoutChanged) as raised:
        await check_events_layout(redis, prefix, 3)
    assert "ARCANA_EVENTS_PARTITIONS is 3, but 2 event(s) not yet handled" in str(raised.value)
    assert "ARCANA_EVENTS_PARTITIONS=1" in str(raised.value)
    assert await recorded_events(redis, prefix) is None

    await redis.xgroup_create(stream, GROUP, id="0")
    read = await redis.xreadgroup(GROUP, "c1", {stream: ">"}, count=10)
    ids = [entry_id for entry_id, _fields in read[0][1]]
    assert len(ids) == 2
    with pytest.raises(LayoutChanged, match="2 event"):  # delivered, not acknowledged
        await check_events_layout(redis, prefix, 3)
    await redis.xack(stream, GROUP, ids[0])
    with pytest.raises(LayoutChanged, match="1 event"):
        await check_events_layout(redis, prefix, 3)
    await redis.xadd(stream, {"e": "3"})  # one more, not delivered yet
    with pytest.raises(LayoutChanged, match="2 event"):
        await check_events_layout(redis, prefix, 3)
    more = await redis.xreadgroup(GROUP, "c1", {stream: ">"}, count=10)
    await redis.xack(stream, GROUP, ids[1], *(i for i, _f in more[0][1]))
    await redis.xadd(f"{stream}:dead", {"e": "x"})
    with caplog.at_level(logging.WARNING, logger="arcana.layout"):
        await check_events_layout(redis, prefix, 3)
    assert await recorded_events(redis, prefix) == 3
    logged = [r.getMessage() for r in caplog.records]
    assert any("1 dead event(s) stay under the old layout" in m for m in logged)


async def test_a_start_with_another_count_refuses_while_events_wait(
    redis: Redis, prefix: str, tmp_path: Path
) -> None:
    """The check runs where every process starts."""
    await check_events_layout(redis, prefix, 2)
    await redis.xadd(event_streams(prefix, 2)[1], {"e": "1"})
    settings = base_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}",
        redis_url=REDIS_URL,
        redis_prefix=prefix,
        var_dir=tmp_path / "var",
        events_partitions=1,
    )
    process = Lifecycle.build(settings)
    try:
        with pytest.raises(LayoutChanged, match="ARCANA_EVENTS_PARTITIONS=2"):
            await process.start(enforce_layouts=True)
    finally:
        await process.stop()
    assert await recorded_events(redis, prefix) == 2


# -- processes running with another count --------------------------------------------------------
def nothing_left(redis: Redis, prefix: str) -> Layout:
    """The queue's layout, with nothing left under any count."""
    layout = queue_layout(redis, prefix)

    async def none(partitions: int) -> tuple[int, int]:
        return 0, 0

    return Layout(**{**layout.__dict__, "left_behind": none})


async def alive(redis: Redis, layout: Layout) -> dict[str, str]:
    """The processes recorded as running: name → "count expiry-ms"."""
    fields: dict[bytes, bytes] = await redis.hgetall(layout.key)  # type: ignore[assignment]
    return {
        k.decode().removeprefix("alive:"): v.decode()
        for k, v in fields.items()
        if k.startswith(b"alive:")
    }


async def test_a_process_running_with_another_count_keeps_a_new_count_from_starting(
    redis: Redis, prefix: str
) -> None:
    """A drained layout is not enough: a process still running with the old count would go
    on writing under it."""
    layout = nothing_left(redis, prefix)
    await check_layout(redis, layout, 2, "old-a")
    await check_layout(redis, layout, 2, "old-b")  # the same count joins
    with pytest.raises(LayoutChanged) as raised:
        await check_layout(redis, layout, 3, "new")
    assert "ARCANA_QUEUE_PARTITIONS is 3" in str(raised.value)
    assert "2 with ARCANA_QUEUE_PARTITIONS=2" in str(raised.value)
    assert set(await alive(redis, layout)) == {"old-a", "old-b"}
    assert await recorded(redis, prefix) == 2
    await redis.hdel(layout.key, "alive:old-a", "alive:old-b")  # both stopped
    await check_layout(redis, layout, 3, "new")
    assert await recorded(redis, prefix) == 3


async def test_two_starts_with_different_counts_at_the_same_instant_cannot_both_pass(
    redis: Redis, prefix: str
) -> None:
    """Both read the same recorded count and find nothing left under it before either records
    its own: the second to record finds the first, checks again and refuses."""
    layout = nothing_left(redis, prefix)
    both_checked = asyncio.Barrier(2)

    async def after_both_checked(partitions: int) -> tuple[int, int]:
        await both_checked.wait()
        return 0, 0

    racing = Layout(**{**layout.__dict__, "left_behind": after_both_checked})
    results = await asyncio.gather(
        check_layout(redis, racing, 2, "two"),
        check_layout(redis, racing, 4, "four"),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, LayoutChanged)]
    assert len(refused) == 1, results
    assert "other processes run the queue with another count" in str(refused[0])
    running = await alive(redis, layout)
    assert len(running) == 1
    [(name, record)] = running.items()
    assert record.split()[0] == str(await recorded(redis, prefix))
    assert name == ("two" if await recorded(redis, prefix) == 2 else "four")


async def test_a_process_that_ended_without_stopping_is_forgotten_when_its_record_expires(
    redis: Redis, prefix: str
) -> None:
    layout = nothing_left(redis, prefix)
    await check_layout(redis, layout, 2, "killed", presence_seconds=0.5)
    with pytest.raises(LayoutChanged):
        await check_layout(redis, layout, 3, "new")

    async def starts() -> bool:
        try:
            await check_layout(redis, layout, 3, "new")
        except LayoutChanged:
            return False
        return True

    await wait_for(starts, timeout=10)
    assert set(await alive(redis, layout)) == {"new"}
    assert await recorded(redis, prefix) == 3


async def test_a_running_process_renews_its_record_and_removes_it_when_it_stops(
    redis: Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Renewed past its first lifetime, so the refusal lasts as long as the process runs; one
    that finds another count running (started while Redis was unreachable) says so."""
    layout = nothing_left(redis, prefix)
    await check_layout(redis, layout, 2, "runner", presence_seconds=0.6)
    first = (await alive(redis, layout))["runner"]
    stop = asyncio.Event()
    with caplog.at_level(logging.ERROR, logger="arcana.layout"):
        task = asyncio.create_task(
            keep_present(redis, layout, 2, "runner", stop, presence_seconds=0.6)
        )
        try:

            async def renewed_twice() -> bool:
                record = (await alive(redis, layout)).get("runner", "0 0")
                return int(record.split()[1]) >= int(first.split()[1]) + 500

            await wait_for(renewed_twice, timeout=10)
            with pytest.raises(LayoutChanged):  # past the first record's lifetime
                await check_layout(redis, layout, 3, "new")
            await redis.hset(layout.key, "alive:stray", "5 99999999999999")

            async def told() -> bool:
                return any("ARCANA_QUEUE_PARTITIONS=5" in r.getMessage() for r in caplog.records)

            await wait_for(told, timeout=10)
        finally:
            stop.set()
            await task
    assert "runner" not in await alive(redis, layout)


async def test_serve_or_worker_records_itself_while_it_runs(
    redis: Redis, prefix: str, tmp_path: Path
) -> None:
    """Where every process starts: a ``serve`` or ``worker`` start is recorded until it stops,
    and keeps a start with another count from starting meanwhile."""

    def settings(partitions: int, name: str) -> Settings:
        return base_settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / name}.db",
            redis_url=REDIS_URL,
            redis_prefix=prefix,
            var_dir=tmp_path / name,
            events_partitions=partitions,
        )

    layout = events_layout(redis, prefix)
    running = Lifecycle.build(settings(2, "running"))
    await running.start(enforce_layouts=True)
    try:
        [record] = (await alive(redis, layout)).values()
        assert record.split()[0] == "2"
        other = Lifecycle.build(settings(1, "other"))
        try:
            with pytest.raises(LayoutChanged, match="1 with ARCANA_EVENTS_PARTITIONS=2"):
                await other.start(enforce_layouts=True)
        finally:
            await other.stop()
    finally:
        await running.stop()
    assert await alive(redis, layout) == {}
    after = Lifecycle.build(settings(1, "after"))
    try:
        await after.start(enforce_layouts=True)
        assert [r.split()[0] for r in (await alive(redis, layout)).values()] == ["1"]
    finally:
        await after.stop()
    assert await recorded_events(redis, prefix) == 1
