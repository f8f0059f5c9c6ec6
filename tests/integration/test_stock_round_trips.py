"""Round trips per stock change on PostgreSQL, counted on the wire (``tests/pg_wire.py``): a
count, not a time, so it holds on a loaded machine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from sqlalchemy import func, select, text

from arcana.adapters.product_repositories import SqlStockChanges
from arcana.adapters.statement_batches import StatementBatches
from arcana.adapters.tables import outbox, products
from arcana.domain.products import STOCK_MAX, NewProduct
from arcana.errors import ServiceUnavailable
from arcana.lifecycle import Lifecycle
from tests.conftest import base_settings, end_server_sessions, truncate_all, wait_for
from tests.pg_wire import WireCounter

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def proxied(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[Lifecycle, WireCounter]]:
    """A process on this run's database (no Redis), its connections through the counter."""
    await truncate_all(pg_url)
    parts = urlsplit(pg_url)
    async with WireCounter(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        url = f"postgresql+asyncpg://{parts.username}@127.0.0.1:{proxy.port}{parts.path}"
        settings = base_settings(database_url=f"{url}?ssl=disable", var_dir=tmp_path / "var")
        async with Lifecycle.running(settings, migrate_embedded=False) as process:
            # As under ``arcana serve``, whose relay these commits wake in-process (so they
            # send no NOTIFY). The relay itself is not started: its statements would be
            # counted with the changes'.
            process.app.db.local_relay = True
            yield process, proxy


async def stored_stock(process: Lifecycle, product_id: str) -> int:
    async with process.app.db.engine.connect() as conn:
        stock = await conn.scalar(select(products.c.stock).where(products.c.id == product_id))
    assert stock is not None
    return int(stock)


async def updated_events(process: Lifecycle, product_id: str) -> int:
    async with process.app.db.engine.connect() as conn:
        return int(
            await conn.scalar(
                select(func.count())
                .select_from(outbox)
                .where(
                    outbox.c.aggregate_id == product_id,
                    outbox.c.event_type == "product.updated",
                )
            )
            or 0
        )


async def test_a_stock_change_is_one_round_trip_without_begin_or_commit(
    proxied: tuple[Lifecycle, WireCounter],
) -> None:
    process, proxy = proxied
    service = process.app.products
    p = await service.create("admin-1", NewProduct(name="Hot", price=Decimal("1"), stock=1000))
    await service.adjust_stock("admin-1", p.id, 1)  # the connection and its statement ready
    proxy.reset()
    for delta in (1, -1) * 10:
        await service.adjust_stock("admin-1", p.id, delta)
    counts = proxy.reset()
    # One statement per change (the change and its outbox row), committed by itself.
    assert counts.round_trips == 20, counts
    assert counts.executes == 20, counts
    assert counts.queries == [], counts  # no BEGIN / COMMIT / ROLLBACK
    assert counts.parses == 0, counts  # prepared once, reused
    assert await stored_stock(process, p.id) == 1001
    assert await updated_events(process, p.id) == 21


async def test_a_process_without_a_relay_takes_the_transaction_with_its_notify(
    proxied: tuple[Lifecycle, WireCounter],
) -> None:
    """Its commit must wake the relay of another process: the NOTIFY goes in the change's
    transaction, which an autocommitted statement does not have."""
    process, proxy = proxied
    process.app.db.local_relay = False
    service = process.app.products
    p = await service.create("admin-1", NewProduct(name="Hot", price=Decimal("1"), stock=1000))
    await service.adjust_stock("admin-1", p.id, 1)
    proxy.reset()
    await service.adjust_stock("admin-1", p.id, 1)
    counts = proxy.reset()
    # BEGIN, the change with its outbox row, the NOTIFY, COMMIT.
    assert counts.round_trips == 4, counts
    assert counts.executes == 2, counts
    assert [q.split()[0].rstrip(";") for q in counts.queries] == ["BEGIN", "COMMIT"], counts
    assert await stored_stock(process, p.id) == 1002
    assert await updated_events(process, p.id) == 2


async def test_a_refused_one_statement_change_leaves_no_event(
    proxied: tuple[Lifecycle, WireCounter],
) -> None:
    """The one-statement change commits by itself: its outbox row must exist only when the
    row changed (``INSERT … SELECT … FROM`` the updated row), not be rolled back later."""
    process, _ = proxied
    service = process.app.products
    p = await service.create("admin-1", NewProduct(name="Full", price=Decimal("1"), stock=500))
    with pytest.raises(Exception, match="above"):
        await service.adjust_stock("admin-1", p.id, STOCK_MAX)
    assert await stored_stock(process, p.id) == 500
    assert await updated_events(process, p.id) == 0


async def test_a_change_on_a_connection_the_server_ended_is_503_and_the_connection_is_dropped(
    proxied: tuple[Lifecycle, WireCounter], pg_url: str
) -> None:
    """The one-statement change runs on the driver directly: a pooled connection whose server
    session is gone must answer as an outage (503, nothing changed), and must not go back to the
    pool, where it would fail every later change that draws it."""
    process, _ = proxied
    service = process.app.products
    p = await service.create("admin-1", NewProduct(name="Cut", price=Decimal("1"), stock=1000))
    await service.adjust_stock("admin-1", p.id, 1)
    # The pool holds several connections when the server ends them: four checked out at once
    # (concurrent changes would share one, in one batch).
    together = asyncio.Barrier(4)

    async def hold() -> None:
        async with process.app.db.engine.connect():
            await together.wait()

    await asyncio.gather(*(hold() for _ in range(4)))
    assert await end_server_sessions(pg_url) >= 2
    pooled = process.app.db.engine.sync_engine.pool.size() + 10  # every connection it may hold
    refused = 0
    for _ in range(pooled + 1):
        try:
            await service.adjust_stock("admin-1", p.id, 1)
            break
        except ServiceUnavailable:
            refused += 1
    else:
        pytest.fail("every change after the connections ended was refused")
    # One dead connection was drawn and answered as an outage; the others were taken as dead
    # with it (as after a server restart) and opened again, not drawn one refusal each.
    assert refused == 1
    for _ in range(5):
        await service.adjust_stock("admin-1", p.id, 1)
    assert await stored_stock(process, p.id) == 1007
    assert await updated_events(process, p.id) == 7


async def test_a_server_goodbye_read_as_the_next_answer_is_one_refusal_too(
    proxied: tuple[Lifecycle, WireCounter], pg_url: str
) -> None:
    """The server's goodbye to an idle pooled connection (FATAL 57P01, admin_shutdown) can be
    read only as the answer to the connection's next statement, when the event loop had not
    read it before. asyncpg then raises a ``PostgresError`` of SQLSTATE class 08
    (``ConnectionDoesNotExistError``: "closed in the middle of operation"), not its error for
    a connection it knew was closed. It is an outage all the same: one refusal, and the other
    pooled connections are taken as dead with it. The proxy keeps each goodbye back until the
    connection is used, so this happens every time (on a loaded machine it happened now and
    then: two refusals where one was expected)."""
    process, proxy = proxied
    service = process.app.products
    p = await service.create("admin-1", NewProduct(name="Cut", price=Decimal("1"), stock=1000))
    together = asyncio.Barrier(4)

    async def hold() -> None:
        async with process.app.db.engine.connect():
            await together.wait()

    await asyncio.gather(*(hold() for _ in range(4)))
    proxy.held = True
    ended = await end_server_sessions(pg_url)
    assert ended >= 4
    await wait_for(lambda: proxy.kept_endings >= ended, timeout=10)
    proxy.held = False
    pooled = process.app.db.engine.sync_engine.pool.size() + 10
    refused: list[ServiceUnavailable] = []
    for _ in range(pooled + 1):
        try:
            await service.adjust_stock("admin-1", p.id, 1)
            break
        except ServiceUnavailable as exc:
            refused.append(exc)
    else:
        pytest.fail("every change after the connections ended was refused")
    assert len(refused) == 1, [repr(e.__cause__) for e in refused]
    chain: list[BaseException] = []
    err: BaseException | None = refused[0]
    while err is not None:
        chain.append(err)
        err = err.__cause__
    # The path this test is about: the driver's error is a server-side one, of class 08.
    driver = [e for e in chain if isinstance(e, asyncpg.PostgresError)]
    assert driver, chain
    assert str(driver[0].sqlstate).startswith("08"), chain
    assert await stored_stock(process, p.id) == 1001


async def test_the_driver_path_stores_and_answers_what_sqlalchemy_reads_back(
    proxied: tuple[Lifecycle, WireCounter],
) -> None:
    """The one-statement change binds and reads its values on asyncpg directly: the product it
    answers and the outbox row it stores are what SQLAlchemy's own execution reads back."""
    process, _ = proxied
    service = process.app.products
    p = await service.create("admin-1", NewProduct(name="Same", price=Decimal("12.30"), stock=50))
    changed = await service.adjust_stock("admin-1", p.id, -7)
    async with process.app.db.engine.connect() as conn:
        row = (await conn.execute(select(products).where(products.c.id == p.id))).one()
        event = (
            await conn.execute(
                select(outbox).where(
                    outbox.c.aggregate_id == p.id, outbox.c.event_type == "product.updated"
                )
            )
        ).one()
    assert changed.stock == row.stock == 43
    assert (changed.price, changed.name, changed.status.value) == (row.price, row.name, row.status)
    assert (changed.created_at, changed.updated_at) == (row.created_at, row.updated_at)
    assert changed.updated_at.tzinfo is not None
    assert event.kind == "event"
    assert event.published_at is None
    assert event.data["event_type"] == "product.updated"
    assert event.data["data"] == {"productId": p.id}
    assert event.data["id"] == event.id
    assert event.created_at.tzinfo is not None
    assert event.data["timestamp"].startswith(event.created_at.strftime("%Y-%m-%dT%H:%M:%S"))


# -- group commit: concurrent changes in one round trip (``adapters/statement_batches.py``) --
def batches_of(process: Lifecycle) -> StatementBatches:
    stock = process.app.products._stock
    assert isinstance(stock, SqlStockChanges)
    assert stock._quiet is not None
    return stock._quiet


async def test_concurrent_changes_share_round_trips_and_each_gets_its_own_answer(
    proxied: tuple[Lifecycle, WireCounter],
) -> None:
    process, proxy = proxied
    service = process.app.products
    made = [
        await service.create("admin-1", NewProduct(name=f"P{i}", price=Decimal("1"), stock=100))
        for i in range(5)
    ]
    # The connection and both forms of the statement ready: alone, and batched.
    await asyncio.gather(*(service.adjust_stock("admin-1", made[0].id, 1) for _ in range(3)))
    batches = batches_of(process)
    sent_before = batches.round_trips
    proxy.reset()
    # Ten +1 changes on each of five products, in one burst.
    changes = [p.id for p in made for _ in range(10)]
    answers = await asyncio.gather(*(service.adjust_stock("admin-1", pid, 1) for pid in changes))
    counts = proxy.reset()
    assert counts.executes == 50, counts  # every change ran its own statement
    assert counts.round_trips < 50, counts  # but not in a round trip of its own
    assert counts.queries == [], counts  # each batch is one implicit transaction, no BEGIN
    assert counts.parses == 0, counts
    assert batches.round_trips - sent_before == counts.round_trips
    assert batches.rerun == 0
    # Every caller sees the row as its own change left it: one product's ten answers are ten
    # different stock levels, 104 to 113 for the first (103 before the burst), 101 to 110 else.
    for i, p in enumerate(made):
        seen = sorted(a.stock for a, pid in zip(answers, changes, strict=True) if pid == p.id)
        first = 104 if i == 0 else 101
        assert seen == list(range(first, first + 10)), (i, seen)
        assert await stored_stock(process, p.id) == first + 9
        assert await updated_events(process, p.id) == (13 if i == 0 else 10)


async def test_refused_changes_in_a_batch_answer_alone_and_leave_no_event(
    proxied: tuple[Lifecycle, WireCounter],
) -> None:
    """A change the one statement refuses (near 0, below 0, above the maximum, no such product)
    comes back from its batch without a row and takes the transactional path on its own."""
    process, _ = proxied
    service = process.app.products
    low = await service.create("admin-1", NewProduct(name="Low", price=Decimal("1"), stock=12))
    hot = await service.create("admin-1", NewProduct(name="Hot", price=Decimal("1"), stock=500))
    missing = "00000000-0000-4000-8000-000000000000"
    outcomes = await asyncio.gather(
        service.adjust_stock("admin-1", hot.id, 1),
        service.adjust_stock("admin-1", low.id, -5),  # leaves 7: a level event, transactional
        service.adjust_stock("admin-1", hot.id, -1000),  # below 0
        service.adjust_stock("admin-1", hot.id, STOCK_MAX),  # above the maximum
        service.adjust_stock("admin-1", missing, 1),
        service.adjust_stock("admin-1", hot.id, 1),
        return_exceptions=True,
    )
    assert [type(o).__name__ for o in outcomes] == [
        "Product",
        "Product",
        "InsufficientStock",
        "ValidationFailed",
        "NotFound",
        "Product",
    ]
    assert await stored_stock(process, hot.id) == 502
    assert await updated_events(process, hot.id) == 2
    assert await stored_stock(process, low.id) == 7
    assert await updated_events(process, low.id) == 1
    assert batches_of(process).rerun == 0


async def test_a_change_that_fails_in_a_batch_fails_alone(
    proxied: tuple[Lifecycle, WireCounter], pg_url: str
) -> None:
    """PostgreSQL's error in one statement undoes its whole batch; the others are made again,
    one by one, and only the failing change answers with the error."""
    process, _ = proxied
    service = process.app.products
    good = [
        await service.create("admin-1", NewProduct(name=f"G{i}", price=Decimal("1"), stock=100))
        for i in range(3)
    ]
    bad = await service.create("admin-1", NewProduct(name="Bad", price=Decimal("1"), stock=100))
    await service.adjust_stock("admin-1", good[0].id, 1)
    admin = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        # A real error raised by the server, for the one product only.
        await admin.execute(
            """CREATE FUNCTION arcana_test_refuse() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
               CREATE TRIGGER arcana_test_refuse BEFORE UPDATE ON products FOR EACH ROW
               WHEN (NEW.name = 'Bad') EXECUTE FUNCTION arcana_test_refuse();"""
        )
        batches = batches_of(process)
        rerun_before = batches.rerun
        calls = [*(p.id for p in good for _ in range(4)), bad.id, *(p.id for p in good)]
        outcomes = await asyncio.gather(
            *(service.adjust_stock("admin-1", pid, 1) for pid in calls), return_exceptions=True
        )
    finally:
        await admin.execute(
            "DROP TRIGGER IF EXISTS arcana_test_refuse ON products;"
            "DROP FUNCTION IF EXISTS arcana_test_refuse();"
        )
        await admin.close()
    failed = [pid for pid, o in zip(calls, outcomes, strict=True) if isinstance(o, Exception)]
    assert failed == [bad.id], outcomes
    assert "refused by the test" in str(outcomes[calls.index(bad.id)])
    assert batches.rerun > rerun_before  # the burst did go out in a batch, and was undone
    assert await stored_stock(process, bad.id) == 100
    assert await updated_events(process, bad.id) == 0
    assert [await stored_stock(process, p.id) for p in good] == [106, 105, 105]
    assert [await updated_events(process, p.id) for p in good] == [6, 5, 5]


async def test_batches_of_two_processes_never_deadlock(
    proxied: tuple[Lifecycle, WireCounter], pg_url: str, tmp_path: Path
) -> None:
    """Each batch locks its rows in product order, so two processes' batches over the same
    products in opposite orders wait for each other at most, never in a cycle (which
    PostgreSQL would end by failing one: a batch run again change by change)."""
    first, _ = proxied
    settings = base_settings(database_url=pg_url, var_dir=tmp_path / "other")
    async with Lifecycle.running(settings, migrate_embedded=False) as second:
        second.app.db.local_relay = True
        made = [
            await first.app.products.create(
                "admin-1", NewProduct(name=f"D{i}", price=Decimal("1"), stock=1000)
            )
            for i in range(8)
        ]
        ids = [p.id for p in made]
        rerun_before = batches_of(first).rerun, batches_of(second).rerun
        for _ in range(5):
            await asyncio.gather(
                *(first.app.products.adjust_stock("admin-1", pid, 1) for pid in ids),
                *(second.app.products.adjust_stock("admin-1", pid, 1) for pid in reversed(ids)),
            )
        assert (batches_of(first).rerun, batches_of(second).rerun) == rerun_before
        assert batches_of(second).round_trips >= 5
        assert [await stored_stock(first, pid) for pid in ids] == [1010] * 8


async def test_a_batch_waiting_for_a_row_lock_does_not_hold_up_other_products(
    proxied: tuple[Lifecycle, WireCounter], pg_url: str
) -> None:
    """Another transaction holds one product's row: the change of that product waits for it,
    and a change of another product, arriving meanwhile, is made without waiting."""
    process, _ = proxied
    service = process.app.products
    held = await service.create("admin-1", NewProduct(name="Held", price=Decimal("1"), stock=100))
    free = await service.create("admin-1", NewProduct(name="Free", price=Decimal("1"), stock=100))
    holder = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    lock = holder.transaction()
    await lock.start()
    try:
        await holder.execute("SELECT 1 FROM products WHERE id = $1 FOR UPDATE", held.id)
        waiting = asyncio.create_task(service.adjust_stock("admin-1", held.id, 1))

        async def blocked() -> bool:
            # Not on ``holder``: inside its transaction, pg_stat_activity is one snapshot.
            async with process.app.db.engine.connect() as conn:
                count = await conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE 'WITH changed AS%'"
                    )
                )
            return bool(count)

        await wait_for(blocked, timeout=10)
        changed = await asyncio.wait_for(service.adjust_stock("admin-1", free.id, 1), 10)
        assert changed.stock == 101
        assert not waiting.done()
    finally:
        await lock.rollback()
        await holder.close()
    assert (await asyncio.wait_for(waiting, 10)).stock == 101
