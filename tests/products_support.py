"""Helpers shared by the product tests: tokens and a product factory."""

from __future__ import annotations

from typing import Any

import httpx

from arcana.bootstrap import App

BASE = "/api/v1/products"


def admin_headers(container: App, user_id: str = "admin-1") -> dict[str, str]:
    token = container.auth_area.tokens.issue(
        user_id, frozenset({"user", "admin"}), generation=0
    ).token
    return {"Authorization": f"Bearer {token}"}


def user_headers(container: App, user_id: str = "user-1") -> dict[str, str]:
    token = container.auth_area.tokens.issue(user_id, frozenset({"user"}), generation=0).token
    return {"Authorization": f"Bearer {token}"}


async def create_product(
    client: httpx.AsyncClient, container: App, **fields: Any
) -> dict[str, Any]:
    body = {"name": "Widget", "price": 19.99, "stock": 5, "category": "tools", **fields}
    r = await client.post(BASE, json=body, headers=admin_headers(container))
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def seed_products(container: App, n: int, batch: int = 1000) -> None:
    """Bulk rows through the service (the same path as ``arcana demo-data``)."""
    from decimal import Decimal

    from arcana.domain.products import NewProduct, ProductStatus

    for start in range(0, n, batch):
        items = [
            NewProduct(name=f"Seed {i}", price=Decimal("1.50"), stock=i % 20, category="seed")
            for i in range(start, min(n, start + batch))
        ]
        await container.products.create_many(items, ProductStatus.ACTIVE)
