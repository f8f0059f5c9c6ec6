"""``arcana.product.v1.ProductService``: the same ``ProductService`` as REST, other transport."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2

from arcana.domain.products import NewProduct, Product, ProductChanges, ProductQuery
from arcana.domain.timestamps import iso_z
from arcana.errors import Unauthorized, ValidationFailed
from arcana.rpc.gen.arcana.product.v1 import product_pb2 as pb
from arcana.rpc.gen.arcana.product.v1 import product_pb2_grpc as pb_grpc
from arcana.rpc.interceptors import current_principal
from arcana.services.app import Services
from arcana.services.products import product_from_json

ADMIN_METHODS = frozenset({"CreateProduct", "UpdateProduct", "UpdateStock", "DeleteProduct"})
DEFAULT_SIZE = 10


def _rfc3339(p: Product, field: str) -> str:
    value = getattr(p, field)
    return iso_z(value)


def to_message(p: Product) -> pb.ProductResponse:
    return pb.ProductResponse(
        id=p.id,
        name=p.name,
        description=p.description or "",
        price=float(p.price),
        stock=p.stock,
        category=p.category or "",
        status=p.status.value,
        created_at=_rfc3339(p, "created_at"),
        updated_at=_rfc3339(p, "updated_at"),
    )


def _actor() -> str:
    principal = current_principal.get()
    if principal is None:  # the auth interceptor guards every write
        raise Unauthorized("Missing bearer token")
    return principal.user_id


class ProductServicer(pb_grpc.ProductServiceServicer):
    MESSAGES_MAX = 10_000

    def __init__(self, services: Services) -> None:
        self._products = services.products
        # Messages built from a product's JSON, keyed by those exact bytes: a cache hit then
        # skips JSON parsing and message building. The key *is* the content, so an entry can
        # never be stale; the oldest half is dropped when full.
        self._messages: dict[bytes, pb.ProductResponse] = {}

    async def GetProduct(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        body = await self._products.get_json(request.id)
        message = self._messages.get(body)
        if message is None:
            message = to_message(product_from_json(body))
            if len(self._messages) >= self.MESSAGES_MAX:
                for key in list(self._messages)[: self.MESSAGES_MAX // 2]:
                    del self._messages[key]
            self._messages[body] = message
        return message

    async def ListProducts(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        query = ProductQuery.build(
            page=request.page,
            size=request.size or DEFAULT_SIZE,
            category=request.category or None,
            status=request.status or None,
        )
        page = await self._products.list_products(query)
        return pb.ListProductsResponse(
            products=[to_message(p) for p in page.items],
            total=page.total,
            page=page.page,
            size=page.size,
            has_next=page.has_next,
        )

    async def CreateProduct(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        new = NewProduct.build(
            name=request.name,
            price=request.price,
            description=request.description or None,
            stock=request.stock,
            category=request.category or None,
        )
        return to_message(await self._products.create(_actor(), new))

    async def UpdateProduct(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        fields: dict[str, Any] = {}
        for name in ("name", "price", "stock", "status"):
            if request.HasField(name):
                fields[name] = getattr(request, name)
        for name in ("description", "category"):
            if request.HasField(name):
                fields[name] = getattr(request, name) or None
        changes = ProductChanges.build(fields)
        return to_message(await self._products.update(_actor(), request.id, changes))

    async def UpdateStock(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if not request.product_id:
            raise ValidationFailed("product_id: is required")
        product = await self._products.adjust_stock(
            _actor(), request.product_id, request.quantity_change
        )
        return to_message(product)

    async def DeleteProduct(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._products.delete(_actor(), request.id)
        return empty_pb2.Empty()
