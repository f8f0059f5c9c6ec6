"""Helpers shared by the product tests: tokens, a product factory and a gRPC stub."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx

from arcana.bootstrap import App
from arcana.rpc.gen.arcana.product.v1 import product_pb2_grpc as pb_grpc
from arcana.rpc.server import GrpcServer

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


async def concurrent_stock_changes(
    client: httpx.AsyncClient, container: App, product_id: str, delta: int, times: int
) -> list[int]:
    """``times`` stock changes of ``delta`` sent at once; their status codes."""
    headers = admin_headers(container)

    async def change() -> int:
        r = await client.post(
            f"{BASE}/{product_id}/stock", json={"quantity_change": delta}, headers=headers
        )
        return r.status_code

    return list(await asyncio.gather(*(change() for _ in range(times))))


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


@contextlib.asynccontextmanager
async def grpc_stub_for(container: App) -> AsyncIterator[pb_grpc.ProductServiceStub]:
    """A gRPC server on a free port over ``container``, and a stub on a real channel to it."""
    srv = GrpcServer(container, "127.0.0.1", 0)
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            yield pb_grpc.ProductServiceStub(channel)
    finally:
        await srv.stop(1.0)
