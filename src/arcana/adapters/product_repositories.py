"""SQL storage of products (SQLAlchemy Core on the unit of work's session)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    Select,
    and_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from arcana import tracing
from arcana.adapters.database import Database, translate_error
from arcana.adapters.driver_statements import DriverStatement
from arcana.adapters.group_commit import SqliteGroupCommit
from arcana.adapters.outbox_rows import NOTIFY_RELAYS, outbox_rows
from arcana.adapters.statement_batches import BATCH_KEY_COLUMN, StatementBatches
from arcana.adapters.tables import outbox, products
from arcana.domain.events import DomainEvent
from arcana.domain.products import (
    QUIET_STOCK,
    STOCK_MAX,
    LevelEvents,
    Product,
    ProductQuery,
    ProductStatus,
    StockChange,
)

_ORDER = (products.c.created_at.desc(), products.c.id.desc())
_OUTBOX_COLUMNS = [
    outbox.c[name]
    for name in ("id", "kind", "event_type", "aggregate_id", "data", "created_at", "trace_context")
]

# One statement, so concurrent changes serialize on the row and can never oversell. The bounds
# are checked in 64 bits so the check itself cannot overflow. Built once: only the parameters
# change between calls.
_DELTA = bindparam("delta", type_=BigInteger)
_WIDE = cast(products.c.stock, BigInteger) + _DELTA
_ADJUST_STOCK = (
    update(products)
    .where(products.c.id == bindparam("product_id"), _WIDE >= 0, _WIDE <= STOCK_MAX)
    .values(
        stock=products.c.stock + _DELTA,
        updated_at=bindparam("now", type_=products.c.updated_at.type),
    )
    .returning(*products.c)
)
_EXISTS = select(products.c.id).where(products.c.id == bindparam("product_id"))
_OUTBOX_PARAMS = [bindparam(f"outbox_{c.name}", type_=c.type) for c in _OUTBOX_COLUMNS]
# PostgreSQL: the ``product.updated`` outbox row inserted by the same statement as the change,
# so it costs no round trip of its own (a refused change rolls it back).
_ADJUST_STOCK_RECORDED = _ADJUST_STOCK.add_cte(
    insert(outbox)
    .values({c.name: p for c, p in zip(_OUTBOX_COLUMNS, _OUTBOX_PARAMS, strict=True)})
    .cte("recorded")
)
# PostgreSQL, a change that leaves QUIET_STOCK or more (it has no level events): the change and
# its ``product.updated`` row in one statement that commits by itself (autocommit). The row is
# inserted from the updated row (``INSERT … SELECT … FROM changed``), so a change the WHERE
# refuses inserts nothing: there is no transaction to roll it back.
_CHANGED = (
    update(products)
    .where(products.c.id == bindparam("product_id"), _WIDE >= QUIET_STOCK, _WIDE <= STOCK_MAX)
    .values(
        stock=products.c.stock + _DELTA,
        updated_at=bindparam("now", type_=products.c.updated_at.type),
    )
    .returning(*products.c)
    .cte("changed")
)
_RECORDED_FROM_CHANGED = (
    insert(outbox)
    .from_select(_OUTBOX_COLUMNS, select(*_OUTBOX_PARAMS).select_from(_CHANGED))
    .cte("recorded")
)
_ADJUST_QUIET_STOCK = select(_CHANGED).add_cte(_RECORDED_FROM_CHANGED)
# The same in a batch of changes (``adapters/statement_batches.py``), whose rows come back
# together: each with its change's place in the batch.
_ADJUST_QUIET_STOCK_BATCHED = select(_CHANGED, BATCH_KEY_COLUMN).add_cte(_RECORDED_FROM_CHANGED)


# The first pages of the whole catalog (no filter), the list's hot read.
_PAGE = (
    select(products)
    .order_by(*_ORDER)
    .limit(bindparam("size", type_=Integer))
    .offset(bindparam("offset", type_=Integer))
)
_COUNT = select(func.count()).select_from(products)


def _aware(value: datetime) -> datetime:
    # SQLite hands timestamps back naive; every timestamp we write is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _to_product(row: Mapping[Any, Any]) -> Product:
    return Product(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        price=row["price"],
        stock=row["stock"],
        category=row["category"],
        status=ProductStatus(row["status"]),
        created_at=_aware(row["created_at"]),
        updated_at=_aware(row["updated_at"]),
    )


def _to_row(p: Product) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "price": p.price,
        "stock": p.stock,
        "category": p.category,
        "status": p.status.value,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    }


class SqlProductRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, product: Product) -> None:
        await self._session.execute(insert(products).values(_to_row(product)))

    async def add_many(self, items: Sequence[Product]) -> None:
        if items:
            await self._session.execute(insert(products), [_to_row(p) for p in items])

    async def get(self, product_id: str) -> Product | None:
        result = await self._session.execute(select(products).where(products.c.id == product_id))
        row = result.mappings().first()
        return _to_product(row) if row is not None else None

    async def get_for_update(self, product_id: str) -> Product | None:
        stmt = select(products).where(products.c.id == product_id)
        if self._session.get_bind().dialect.name != "sqlite":
            stmt = stmt.with_for_update()
        result = await self._session.execute(stmt)
        row = result.mappings().first()
        return _to_product(row) if row is not None else None

    async def save(self, product: Product) -> None:
        values = _to_row(product)
        del values["id"], values["created_at"]
        await self._session.execute(
            update(products).where(products.c.id == product.id).values(values)
        )

    async def delete(self, product_id: str) -> bool:
        result = await self._session.execute(
            delete(products).where(products.c.id == product_id).returning(products.c.id)
        )
        return result.first() is not None

    async def adjust_stock(self, product_id: str, delta: int, now: datetime) -> Product | None:
        result = await self._session.execute(
            _ADJUST_STOCK, {"product_id": product_id, "delta": delta, "now": now}
        )
        row = result.mappings().first()
        return _to_product(row) if row is not None else None

    async def exists(self, product_id: str) -> bool:
        result = await self._session.execute(_EXISTS, {"product_id": product_id})
        return result.first() is not None

    @staticmethod
    def _filtered(stmt: Select[Any], query: ProductQuery) -> Select[Any]:
        if query.category is not None:
            stmt = stmt.where(products.c.category == query.category)
        if query.status is not None:
            stmt = stmt.where(products.c.status == query.status.value)
        if query.name_contains is not None:
            # LIKE wildcards in the search text are matched literally.
            escaped = re.sub(r"([\\%_])", r"\\\1", query.name_contains)
            stmt = stmt.where(func.lower(products.c.name).like(f"%{escaped}%", escape="\\"))
        return stmt

    async def page(
        self, query: ProductQuery, with_total: bool = True
    ) -> tuple[list[Product], int | None]:
        all_rows = getattr(self._session, "all_rows", None)
        unfiltered = query.category is None and query.status is None
        if all_rows is not None and unfiltered and query.name_contains is None:
            # The catalog's pages, built again after every write: on the driver directly in
            # a read-only unit of work (``FirstRowReads.all_rows``).
            params = {"size": query.size, "offset": query.page * query.size}
            found = await all_rows(_PAGE, params)
            total: int | None = None
            if with_total:
                total = int((await self._session.execute(_COUNT)).scalar_one())
            return [_to_product(r) for r in found], total
        rows_stmt = (
            self._filtered(select(products), query)
            .order_by(*_ORDER)
            .limit(query.size)
            .offset(query.page * query.size)
        )
        rows = (await self._session.execute(rows_stmt)).mappings().all()
        total = None
        if with_total:
            count_stmt = self._filtered(select(func.count()).select_from(products), query)
            total = int((await self._session.execute(count_stmt)).scalar_one())
        return [_to_product(r) for r in rows], total

    async def batch_after(self, after: tuple[datetime, str] | None, limit: int) -> list[Product]:
        stmt = select(products).order_by(*_ORDER).limit(limit)
        if after is not None:
            created_at, last_id = after
            stmt = stmt.where(
                or_(
                    products.c.created_at < created_at,
                    and_(products.c.created_at == created_at, products.c.id < last_id),
                )
            )
        rows = (await self._session.execute(stmt)).mappings().all()
        return [_to_product(r) for r in rows]


class GroupCommitStockChanges:
    """``StockChanges`` on embedded SQLite: each change is the same single ``UPDATE`` as in a
    unit of work, with its outbox rows in the same transaction, but run by the group commit
    writer, so concurrent changes share one transaction and one hop to the writer thread."""

    def __init__(
        self,
        writer: SqliteGroupCommit,
        after_commit: Callable[[list[DomainEvent]], None] | None = None,
    ) -> None:
        self._writer = writer
        self._after_commit = after_commit

    async def adjust_stock(
        self,
        product_id: str,
        delta: int,
        now: datetime,
        updated: DomainEvent,
        level_events: LevelEvents,
    ) -> StockChange:
        trace_context = tracing.current_traceparent()  # of this request, read on its task

        def write(conn: Connection) -> tuple[StockChange, list[DomainEvent]]:
            params = {"product_id": product_id, "delta": delta, "now": now}
            row = conn.execute(_ADJUST_STOCK, params).mappings().first()
            if row is None:
                exists = conn.execute(_EXISTS, params).first() is not None
                return StockChange(None, exists), []
            product = _to_product(row)
            recorded = [updated, *level_events(product.stock - delta, product.stock)]
            conn.execute(insert(outbox), outbox_rows(recorded, (), trace_context))
            return StockChange(product, True), recorded

        try:
            change, recorded = await self._writer.run(write)
        except Exception as exc:
            translated = translate_error(exc)
            if translated is not None:
                raise translated from exc
            raise
        if recorded and self._after_commit is not None:
            self._after_commit(recorded)
        return change


class _Refused(Exception):
    def __init__(self, exists: bool) -> None:
        self.exists = exists


class SqlStockChanges:
    """``StockChanges`` on PostgreSQL, on a Core connection (no ORM session).

    A change that leaves ``QUIET_STOCK`` or more in stock (every change but those near 0) is
    one round trip: one statement in autocommit, ``WITH changed AS (UPDATE products … RETURNING),
    recorded AS (INSERT INTO outbox … SELECT … FROM changed) SELECT … FROM changed``, committed
    by itself. Changes that arrive together share a round trip and a commit
    (``adapters/statement_batches.py``): each its own statement, the batch one implicit
    transaction, the row locks held until the batch commits. When it changes nothing (the
    change would leave less than ``QUIET_STOCK``, go out of bounds, or the product is missing)
    the change is made in a transaction instead: ``BEGIN``, the same change with the outbox row
    inserted unconditionally (``WITH recorded AS (INSERT INTO outbox …) UPDATE …``), the level
    event's insert when there is one, ``COMMIT``; a refused change rolls back.

    Behind a transaction pooler (PgBouncer) every change takes the transaction: outside one,
    a statement's prepare and its execution could reach two different server connections. So
    does a process without a relay of its own, whose transaction also notifies the relays of
    other processes (``Database.notifies_outbox``)."""

    def __init__(
        self, db: Database, after_commit: Callable[[list[DomainEvent]], None] | None = None
    ) -> None:
        self._db = db
        self._after_commit = after_commit
        self._autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._quiet: StatementBatches | None = None
        if not db.pooled:
            dialect = db.engine.dialect
            batched = _ADJUST_QUIET_STOCK_BATCHED
            columns = [*products.c, batched.selected_columns.batch_key]
            self._quiet = StatementBatches(
                db.engine,
                DriverStatement(_ADJUST_QUIET_STOCK, dialect, products.c),
                DriverStatement(batched, dialect, columns),
                order="product_id",
            )

    async def adjust_stock(
        self,
        product_id: str,
        delta: int,
        now: datetime,
        updated: DomainEvent,
        level_events: LevelEvents,
    ) -> StockChange:
        trace_context = tracing.current_traceparent()
        params: dict[str, Any] = {"product_id": product_id, "delta": delta, "now": now}
        for key, value in outbox_rows([updated], (), trace_context)[0].items():
            params[f"outbox_{key}"] = value
        row: Mapping[Any, Any] | None
        try:
            # In autocommit there is no transaction to send the NOTIFY of a process without
            # a relay of its own (see ``Database.notifies_outbox``): such a process takes
            # the transaction.
            if self._quiet is not None and not self._db.notifies_outbox:
                if tracing.recording():  # SQLAlchemy's execution makes the statement's span
                    async with self._autocommit.connect() as conn:
                        result = await conn.execute(_ADJUST_QUIET_STOCK, params)
                        row = result.mappings().first()
                else:
                    row = await self._quiet.first_row(params)
                if row is not None:
                    product = _to_product(row)
                    if self._after_commit is not None:
                        self._after_commit([updated])
                    return StockChange(product, True)
            async with self._db.engine.begin() as conn:
                row = (await conn.execute(_ADJUST_STOCK_RECORDED, params)).mappings().first()
                if row is None:
                    raise _Refused((await conn.execute(_EXISTS, params)).first() is not None)
                product = _to_product(row)
                level = level_events(product.stock - delta, product.stock)
                if level:
                    await conn.execute(insert(outbox), outbox_rows(level, (), trace_context))
                if self._db.notifies_outbox:
                    await conn.execute(NOTIFY_RELAYS)
        except _Refused as refused:  # rolled back: the outbox row went with it
            return StockChange(None, refused.exists)
        except Exception as exc:
            translated = translate_error(exc)
            if translated is not None:
                raise translated from exc
            raise
        if self._after_commit is not None:
            self._after_commit([updated, *level])
        return StockChange(product, True)
