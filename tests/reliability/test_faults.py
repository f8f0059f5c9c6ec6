"""Faults with real processes: a private PostgreSQL and a private Redis that really stop,
``arcana serve`` and ``arcana worker`` that are killed with SIGKILL or stopped with SIGTERM.

One deployment (``Stack``) is shared by the scenarios of this module, which run in order;
each ends by waiting until everything is delivered, so the next starts from a clean state.
Every wait is on a condition; no assertion depends on timing beyond "answers within the
configured timeouts" (``REQUEST_TIMEOUT``).
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.auth_support import PASSWORD
from tests.conftest import wait_for
from tests.reliability.stack import REQUEST_TIMEOUT, Stack, new_email
from tests.reliability.support import is_problem

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.timeout(300)]

OUTAGE_SECONDS = 10.0
"""How long PostgreSQL / Redis stay down while traffic goes on."""

WELCOME = "Welcome to Arcana"
RESET = "Reset your Arcana password"


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    s = Stack(Path(tmp_path_factory.mktemp("stack")))
    try:
        await s.start()
        yield s
    finally:
        await s.close()


@dataclass
class Tally:
    """What the workload saw: committed outcomes, ambiguous ones (connection cut), statuses."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    registered: list[str] = field(default_factory=list)
    stock_confirmed: Counter[str] = field(default_factory=Counter)
    stock_ambiguous: Counter[str] = field(default_factory=Counter)
    resets_requested: set[str] = field(default_factory=set)
    slow: list[tuple[str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)

    def seen(self, op: str, resp: httpx.Response, elapsed: float) -> None:
        self.statuses[(op, resp.status_code)] += 1
        if resp.status_code >= 500 and resp.status_code != 503:
            self.server_errors.append(f"{op}: {resp.status_code} {resp.text[:200]}")
        if resp.status_code >= 400 and not is_problem(resp):
            self.errors.append(f"{op}: {resp.status_code} not problem+json: {resp.text[:200]}")
        if elapsed > REQUEST_TIMEOUT:
            self.slow.append((op, elapsed))

    def count(self, op: str, status: int) -> int:
        return self.statuses[(op, status)]


async def create_products(stack: Stack, n: int) -> list[str]:
    ids = []
    async with stack.client() as c:
        for i in range(n):
            resp = await c.post(
                "/api/v1/products",
                json={"name": f"Item {i}", "price": 9.5, "stock": 1000},
                headers=stack.admin_headers(),
            )
            assert resp.status_code == 201, resp.text
            ids.append(resp.json()["id"])
    return ids


async def workload(
    stack: Stack,
    tally: Tally,
    stop: asyncio.Event,
    products: list[str],
    *,
    mix: tuple[str, ...] = ("register", "stock", "reset", "read", "list", "login"),
    tolerate_disconnects: bool = False,
    concurrency: int = 4,
) -> None:
    """Steady mixed traffic until ``stop``; every outcome goes to ``tally``."""
    rng = random.Random(7)
    known: list[str] = []

    async def one(c: httpx.AsyncClient) -> None:
        op = rng.choice(mix)
        t0 = time.monotonic()
        email = ""
        pid = rng.choice(products)
        try:
            if op == "register":
                email = new_email()
                resp = await c.post(
                    "/api/v1/auth/register",
                    json={"name": "Load", "email": email, "password": PASSWORD},
                )
                if resp.status_code == 201:
                    tally.registered.append(email)
                    known.append(email)
            elif op == "stock":
                resp = await c.post(
                    f"/api/v1/products/{pid}/stock",
                    json={"quantity_change": 1},
                    headers=stack.admin_headers(),
                )
                if resp.status_code == 200:
                    tally.stock_confirmed[pid] += 1
            elif op == "reset":
                # (``known`` may fill up while this request is out: decide before sending.)
                email = rng.choice(known) if known else "nobody@example.com"
                resp = await c.post("/api/v1/auth/forgot-password", json={"email": email})
                if resp.status_code == 202 and email != "nobody@example.com":
                    tally.resets_requested.add(email)
            elif op == "read":
                resp = await c.get(f"/api/v1/products/{pid}")
            elif op == "list":
                resp = await c.get("/api/v1/products", params={"size": 5})
            else:
                resp = await c.post(
                    "/api/v1/auth/login",
                    json={"email": "admin@example.com", "password": PASSWORD},
                )
        except httpx.TimeoutException:
            tally.slow.append((op, time.monotonic() - t0))
            return
        except httpx.TransportError as exc:
            if not tolerate_disconnects:
                tally.errors.append(f"{op}: {exc!r}")
            if op == "stock":
                tally.stock_ambiguous[pid] += 1
            await asyncio.sleep(0.05)  # the server is restarting; do not spin
            return
        tally.seen(op, resp, time.monotonic() - t0)

    async def loop() -> None:
        async with stack.client() as c:
            while not stop.is_set():
                await one(c)

    await asyncio.gather(*(loop() for _ in range(concurrency)))


async def stock_of(stack: Stack, pid: str) -> int:
    rows = await stack.sql("SELECT stock FROM products WHERE id = $1", pid)
    return int(rows[0]["stock"])


async def wait_drained(stack: Stack, timeout: float = 90) -> None:
    await wait_for(stack.drained, timeout=timeout, interval=0.25)


async def assert_welcome_exactly_once(stack: Stack) -> None:
    """Every user in the database (the committed registrations, whatever the client saw) has
    exactly one welcome mail."""
    users = await stack.registered_emails()

    def all_sent() -> bool:
        mails = stack.mails(WELCOME)
        return all(mails[u] >= 1 for u in users)

    await wait_for(all_sent, timeout=60, interval=0.25)
    mails = stack.mails(WELCOME)
    duplicates = {u: n for u, n in mails.items() if n > 1}
    assert not duplicates, f"duplicate welcome mails: {duplicates}"
    assert all(mails[u] == 1 for u in users)


async def assert_mailed(stack: Stack, subject: str, recipients: set[str]) -> None:
    def missing() -> set[str]:
        mails = stack.mails(subject)
        return {e for e in recipients if mails[e] < 1}

    try:
        await wait_for(lambda: not missing(), timeout=30, interval=0.25)
    except AssertionError:
        lost = missing()
        report = []
        for e in sorted(lost)[:5]:
            rows = await stack.sql(
                "SELECT id, published_at, attempts FROM outbox "
                "WHERE event_type = 'email.password_reset' AND data::text LIKE $1",
                f"%{e}%",
            )
            for r in rows:
                assert stack.container is not None
                job = await stack.container.queue.get(r["id"])
                report.append((e, r["id"], r["published_at"], job and job.to_dict()))
        raise AssertionError(f"no {subject!r} mail for {sorted(lost)}: {report}") from None


async def readyz(stack: Stack) -> httpx.Response:
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as c:
        return await c.get(f"{stack.base_url}/readyz")


# -- (a) PostgreSQL down ------------------------------------------------------------------------
async def test_postgres_outage_answers_503_and_recovers(stack: Stack) -> None:
    products = await create_products(stack, 3)
    before = {pid: await stock_of(stack, pid) for pid in products}
    tally = Tally()
    stop = asyncio.Event()
    load = asyncio.create_task(workload(stack, tally, stop, products))
    try:
        await wait_for(lambda: len(tally.registered) >= 5, timeout=60)
        committed_before = list(tally.registered)
        await asyncio.to_thread(stack.pg.stop)
        down_since = time.monotonic()
        # The outage is observed from outside (503 problems) for OUTAGE_SECONDS.
        await wait_for(
            lambda: (
                sum(n for (_, s), n in tally.statuses.items() if s == 503) >= 20
                and time.monotonic() - down_since >= OUTAGE_SECONDS
            ),
            timeout=60,
            interval=0.1,
        )
        ready = await readyz(stack)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] is False
        assert is_problem(ready)
        await asyncio.to_thread(stack.pg.start)

        async def ready_again() -> bool:
            return (await readyz(stack)).status_code == 200

        await wait_for(ready_again, timeout=60, interval=0.25)
        mark = len(tally.registered)
        await wait_for(lambda: len(tally.registered) >= mark + 5, timeout=60)
    finally:
        stop.set()
        await load
    assert not tally.server_errors, tally.server_errors[:5]
    assert not tally.errors, tally.errors[:5]
    assert not tally.slow, tally.slow[:5]
    # No committed write lost: users and stock changes the clients saw confirmed are there.
    users = await stack.registered_emails()
    assert set(committed_before) <= users
    assert set(tally.registered) <= users
    for pid in products:
        assert await stock_of(stack, pid) == before[pid] + tally.stock_confirmed[pid]
    # No outbox event lost: everything committed is delivered once the database is back.
    await wait_drained(stack)
    await assert_welcome_exactly_once(stack)


# -- (b) Redis down -----------------------------------------------------------------------------
async def test_redis_outage_keeps_reads_and_logins_and_loses_no_job(stack: Stack) -> None:
    products = await create_products(stack, 2)
    await wait_drained(stack)
    tally = Tally()
    stop = asyncio.Event()
    stack.redis.stop()
    down_since = time.monotonic()
    try:
        load = asyncio.create_task(workload(stack, tally, stop, products))
        ready = await readyz(stack)
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"] is False
        await wait_for(
            lambda: (
                all(
                    tally.count(op, ok) >= 3
                    for op, ok in (("read", 200), ("list", 200), ("login", 200), ("register", 201))
                )
                and time.monotonic() - down_since >= OUTAGE_SECONDS
            ),
            timeout=90,
            interval=0.1,
        )
        during = list(tally.registered)
    finally:
        stop.set()
        await load
        stack.redis.start()
    assert not tally.server_errors, tally.server_errors[:5]
    assert not tally.errors, tally.errors[:5]
    assert not tally.slow, tally.slow[:5]
    # Only outcomes allowed while Redis is down: success (or a clear 4xx).
    assert not [k for k in tally.statuses if k[1] >= 500], tally.statuses
    # Registrations made during the outage: their welcome jobs waited in the outbox and are
    # delivered once Redis is back; workers and consumers reconnect by themselves.
    assert during
    await wait_drained(stack)
    await assert_welcome_exactly_once(stack)
    assert (await readyz(stack)).status_code == 200


# -- (c) kill -9 --------------------------------------------------------------------------------
async def test_kill_9_of_worker_and_serve_loses_and_duplicates_nothing(stack: Stack) -> None:
    products = await create_products(stack, 3)
    await wait_drained(stack)
    before = {pid: await stock_of(stack, pid) for pid in products}
    tally = Tally()
    stop = asyncio.Event()
    rng = random.Random(11)
    load = asyncio.create_task(
        workload(
            stack,
            tally,
            stop,
            products,
            mix=("register", "stock", "reset"),
            tolerate_disconnects=True,
        )
    )
    try:
        for victim in ("worker", "serve", "worker"):
            # A random moment: after a random number of further registrations.
            target = len(tally.registered) + 2 + rng.randrange(6)
            await wait_for(lambda t=target: len(tally.registered) >= t, timeout=60)
            if victim == "worker":
                assert stack.worker is not None
                stack.worker.kill()
                stack.start_worker()
            else:
                assert stack.serve is not None
                stack.serve.kill()
                stack.start_serve()
                await stack.wait_serving()
        mark = len(tally.registered)
        await wait_for(lambda m=mark: len(tally.registered) >= m + 3, timeout=60)
    finally:
        stop.set()
        await load
    assert not tally.server_errors, tally.server_errors[:5]
    assert not tally.errors, tally.errors[:5]
    await wait_drained(stack)
    stats = await stack.queue_stats()
    assert stats["running"] == 0
    assert stats["dead"] == 0, stats
    await assert_welcome_exactly_once(stack)
    # Every committed stock change is reflected; a change whose answer was cut off by the
    # kill may or may not have committed, never partly.
    for pid in products:
        delta = await stock_of(stack, pid) - before[pid]
        confirmed, maybe = tally.stock_confirmed[pid], tally.stock_ambiguous[pid]
        assert confirmed <= delta <= confirmed + maybe, (pid, delta, confirmed, maybe)
    # Every reset request the server confirmed got its mail.
    await assert_mailed(stack, RESET, tally.resets_requested)


# -- (d) graceful shutdown ----------------------------------------------------------------------
async def test_sigterm_finishes_in_flight_work_and_refuses_new(stack: Stack) -> None:
    products = await create_products(stack, 1)
    await wait_drained(stack)
    tally = Tally()
    stop = asyncio.Event()
    # Read before the load starts: a change confirmed early must fall inside the measured delta.
    before = await stock_of(stack, products[0])
    load = asyncio.create_task(
        workload(
            stack,
            tally,
            stop,
            products,
            mix=("register", "stock", "read"),
            tolerate_disconnects=True,
            concurrency=6,
        )
    )
    try:
        await wait_for(lambda: len(tally.registered) >= 5, timeout=60)
        assert stack.serve is not None
        assert stack.worker is not None
        # A job that takes a while is running when the worker is told to stop.
        async with stack.client() as c:
            resp = await c.post(
                "/api/v1/admin/jobs",
                json={
                    "job_type": "system.echo",
                    "payload": {"message": "slow", "sleep_seconds": 2},
                },
                headers=stack.admin_headers(),
            )
            assert resp.status_code == 202, resp.text
            slow_job = resp.json()["id"]

            async def running() -> bool:
                r = await c.get(f"/api/v1/admin/jobs/{slow_job}", headers=stack.admin_headers())
                return bool(r.json()["status"] == "running")

            await wait_for(running, timeout=30, interval=0.05)
        stack.serve.signal(signal.SIGTERM)
        stack.worker.signal(signal.SIGTERM)
        serve_rc = await asyncio.to_thread(stack.serve.proc.wait, 30)  # type: ignore[union-attr]
        worker_rc = await asyncio.to_thread(stack.worker.proc.wait, 30)  # type: ignore[union-attr]
    finally:
        stop.set()
        await load
    assert serve_rc == 0, stack.serve.log()
    assert worker_rc == 0, stack.worker.log()
    # Requests that got an answer got a real one: nothing half-done, no 5xx.
    assert not tally.server_errors, tally.server_errors[:5]
    assert not tally.errors, tally.errors[:5]
    # New connections are refused once it is down.
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=5) as c:
            await c.get(f"{stack.base_url}/healthz")
    # No job left running by the stopped worker: it finished or handed back what it held.
    stats = await stack.queue_stats()
    assert stats["running"] == 0, stats
    assert stack.container is not None
    job = await stack.container.jobs.get(slow_job)
    assert job is not None
    assert job.status.value == "succeeded", job  # finished by the stopping worker
    assert job.retry_count == 0
    users = await stack.registered_emails()
    assert set(tally.registered) <= users
    delta = await stock_of(stack, products[0]) - before
    assert tally.stock_confirmed[products[0]] <= delta
    assert delta <= tally.stock_confirmed[products[0]] + tally.stock_ambiguous[products[0]]
    # Started again, everything left in the outbox or queue is delivered.
    stack.start_serve()
    stack.start_worker()
    await stack.wait_serving()
    await wait_drained(stack)
    await assert_welcome_exactly_once(stack)
