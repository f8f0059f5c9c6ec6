"""Property tests of list filters and pagination: walking the pages of any filter gives every
matching row exactly once, newest first (``created_at`` desc, then ``id`` desc)."""

from __future__ import annotations

import weakref
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcana.bootstrap import App
from arcana.domain.products import NewProduct, ProductChanges, ProductQuery, ProductStatus
from tests.products_support import BASE

pytestmark = pytest.mark.asyncio(loop_scope="session")

CATEGORIES = ["a", "b", "c", None]
STATUSES = [s.value for s in ProductStatus]
_seeded: weakref.WeakKeyDictionary[App, list[dict[str, Any]]] = weakref.WeakKeyDictionary()


async def _catalog(container: App) -> list[dict[str, Any]]:
    """Seed once per container: batches share one created_at, so ties are broken by id."""
    if container in _seeded:
        return _seeded[container]
    for batch in range(4):
        items = [
            NewProduct(
                name=f"b{batch}-{i}",
                price=Decimal("2.00"),
                stock=i,
                category=CATEGORIES[(batch + i) % len(CATEGORIES)],
            )
            for i in range(12)
        ]
        await container.products.create_many(items, ProductStatus.DRAFT)
    async with container.uow() as uow:
        rows, _ = await uow.products.page(ProductQuery(size=100))
    for n, p in enumerate(rows):
        status = STATUSES[n % len(STATUSES)]
        if status != "Draft":
            await container.products.update("t", p.id, ProductChanges.build({"status": status}))
    async with container.uow() as uow:
        rows, _ = await uow.products.page(ProductQuery(size=100))
    catalog = [
        {
            "id": p.id,
            "category": p.category,
            "status": p.status.value,
            "created_at": p.created_at,
        }
        for p in rows
    ]
    _seeded[container] = catalog
    return catalog


def _case(draw_bits: list[bool], text: str) -> str:
    return "".join(c.upper() if b else c.lower() for c, b in zip(text, draw_bits, strict=False))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    size=st.integers(min_value=1, max_value=20),
    category=st.sampled_from(["a", "b", "c", "zz", None]),
    status=st.sampled_from([*STATUSES, None]),
    casing=st.lists(st.booleans(), min_size=8, max_size=8),
)
async def test_pages_cover_each_match_once(
    client: httpx.AsyncClient,
    container: App,
    size: int,
    category: str | None,
    status: str | None,
    casing: list[bool],
) -> None:
    catalog = await _catalog(container)
    expected = sorted(
        (
            p
            for p in catalog
            if (category is None or p["category"] == category)
            and (status is None or p["status"] == status)
        ),
        key=lambda p: (p["created_at"], p["id"]),
        reverse=True,
    )
    params: dict[str, Any] = {"size": size}
    if category is not None:
        params["category"] = category
    if status is not None:
        params["status"] = _case(casing, status)
    seen: list[str] = []
    page = 0
    while True:
        r = await client.get(BASE, params={**params, "page": page})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total"] == len(expected)
        assert (body["page"], body["size"]) == (page, size)
        assert len(body["data"]) <= size
        for item in body["data"]:
            assert category is None or item["category"] == category
            assert status is None or item["status"] == status
        seen.extend(item["id"] for item in body["data"])
        if not body["data"]:
            break
        page += 1
    assert seen == [p["id"] for p in expected]
    assert len(set(seen)) == len(seen)
