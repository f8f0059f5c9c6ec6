"""SQL storage of products (SQLAlchemy Core on the unit of work's session)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Select, and_, cast, delete, func, insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from arcana.adapters.tables import products
from arcana.domain.products import STOCK_MAX, Product, ProductQuery, ProductStatus

_ORDER = (products.c.created_at.desc(), products.c.id.desc())


def _aware(value: datetime) -> datetime:
    # SQLite hands timestamps back naive; every timestamp we write is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _to_product(row: RowMapping) -> Product:
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
        # One statement, so concurrent changes serialize on the row and can never oversell.
        # The bounds are checked in 64 bits so the check itself cannot overflow.
        wide = cast(products.c.stock, BigInteger) + delta
        stmt = (
            update(products)
            .where(products.c.id == product_id, wide >= 0, wide <= STOCK_MAX)
            .values(stock=products.c.stock + delta, updated_at=now)
            .returning(*products.c)
        )
        row = (await self._session.execute(stmt)).mappings().first()
        return _to_product(row) if row is not None else None

    async def exists(self, product_id: str) -> bool:
        result = await self._session.execute(
            select(products.c.id).where(products.c.id == product_id)
        )
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
        rows_stmt = (
            self._filtered(select(products), query)
            .order_by(*_ORDER)
            .limit(query.size)
            .offset(query.page * query.size)
        )
        rows = (await self._session.execute(rows_stmt)).mappings().all()
        total: int | None = None
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
