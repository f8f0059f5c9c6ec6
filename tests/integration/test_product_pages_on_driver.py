"""A catalog page read in a read-only unit of work runs on the driver (``all_rows``): it holds
exactly what SQLAlchemy's execution of the same page gives, on both backends (types, order,
offset, total), and a sampled trace still goes through SQLAlchemy's execution."""

from __future__ import annotations

from decimal import Decimal

from arcana.bootstrap import App
from arcana.domain.products import NewProduct, Product, ProductQuery, ProductStatus


async def _seed(container: App, n: int) -> None:
    items = [
        NewProduct(name=f"item {i}", price=Decimal(f"{i}.25"), stock=i, category="c")
        for i in range(n)
    ]
    await container.products.create_many(items, ProductStatus.ACTIVE)


async def test_a_page_on_the_driver_equals_the_page_through_sqlalchemy(container: App) -> None:
    await _seed(container, 25)
    for page, size in [(0, 10), (1, 10), (2, 10), (0, 100), (7, 10)]:
        query = ProductQuery(page=page, size=size)
        async with container.read_uow() as reads:
            driver_rows, driver_total = await reads.products.page(query)
            assert getattr(reads.products._session, "all_rows", None) is not None
        async with container.uow() as uow:  # a session: SQLAlchemy's execution
            orm_rows, orm_total = await uow.products.page(query)
        assert driver_total == orm_total == 25
        assert driver_rows == orm_rows
        assert len(driver_rows) == max(0, min(size, 25 - page * size))
    first = (await _first_page(container))[0]
    assert isinstance(first.price, Decimal)
    assert first.created_at.tzinfo is not None


async def _first_page(container: App) -> list[Product]:
    async with container.read_uow() as reads:
        rows, _ = await reads.products.page(ProductQuery(page=0, size=10), with_total=False)
    return rows
