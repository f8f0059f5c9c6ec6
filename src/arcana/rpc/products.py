"""``arcana.product.v1.ProductService``: the same ``ProductService`` as REST, other transport.

The protobuf wire form lives here. ``GetProduct`` and ``ListProducts`` answer bytes that were
serialized once and cached by the catalog beside the JSON form (``PRODUCT_PB``, ``PAGE_PB``);
``add_product_service`` registers handlers whose serializer passes such bytes through.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.protobuf.message_factory import GetMessageClass

from arcana.domain.products import (
    NewProduct,
    Product,
    ProductChanges,
    ProductPage,
    ProductQuery,
    is_canonical_product_id,
)
from arcana.domain.timestamps import iso_z
from arcana.errors import Unauthorized, ValidationFailed
from arcana.rpc.gen.arcana.product.v1 import product_pb2 as pb
from arcana.rpc.gen.arcana.product.v1 import product_pb2_grpc as pb_grpc
from arcana.rpc.interceptors import Instrumented, current_principal
from arcana.services.app import Services
from arcana.services.products import Encoding

ADMIN_METHODS = frozenset({"CreateProduct", "UpdateProduct", "UpdateStock", "DeleteProduct"})
DEFAULT_SIZE = 10
SERVICE = pb.DESCRIPTOR.services_by_name["ProductService"]


def to_message(p: Product) -> pb.ProductResponse:
    return pb.ProductResponse(
        id=p.id,
        name=p.name,
        description=p.description or "",
        price=float(p.price),
        stock=p.stock,
        category=p.category or "",
        status=p.status.value,
        created_at=iso_z(p.created_at),
        updated_at=iso_z(p.updated_at),
    )


def to_page_message(page: ProductPage) -> pb.ListProductsResponse:
    return pb.ListProductsResponse(
        products=[to_message(p) for p in page.items],
        total=page.total,
        page=page.page,
        size=page.size,
        has_next=page.has_next,
    )


PRODUCT_PB: Encoding[Product] = Encoding("pb", lambda p: to_message(p).SerializeToString())
PAGE_PB: Encoding[ProductPage] = Encoding(
    "pb", lambda page: to_page_message(page).SerializeToString()
)


# Methods whose servicer answers the serialized response (bytes from the catalog's cache or
# encoder, never a message): their handlers have no serializer, so the bytes are sent as they
# are, with no call into Python per response.
ENCODED_METHODS = frozenset({"GetProduct", "ListProducts"})


def add_product_service(servicer: pb_grpc.ProductServiceServicer, server: Instrumented) -> None:
    """What the generated ``add_ProductServiceServicer_to_server`` does, built from the service
    descriptor, except that the ``ENCODED_METHODS`` answer bytes of their response message."""
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=GetMessageClass(method.input_type).FromString,
            response_serializer=None
            if method.name in ENCODED_METHODS
            else GetMessageClass(method.output_type).SerializeToString,
        )
        for method in SERVICE.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),)
    )
    server.add_registered_method_handlers(SERVICE.full_name, handlers)


def _actor() -> str:
    principal = current_principal.get()
    if principal is None:  # the auth interceptor guards every write
        raise Unauthorized("Missing bearer token")
    return principal.user_id


class ProductServicer(pb_grpc.ProductServiceServicer):
    def __init__(self, services: Services) -> None:
        self._products = services.products

    async def GetProduct(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The serialized ``ProductResponse``, straight from the cache on a hit. An id already
        in canonical form skips parsing on the hit path (as REST's cached route does); any
        other id, and a miss, take ``get_encoded`` (which counts the miss)."""
        product_id = request.id
        if is_canonical_product_id(product_id):
            body = self._products.cached_encoded_now(product_id, PRODUCT_PB)
            if body is None:
                body = await self._products.cached_encoded(product_id, PRODUCT_PB)
            if body is not None:
                return body
        return await self._products.get_encoded(product_id, PRODUCT_PB)

    async def ListProducts(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        query = ProductQuery.build(
            page=request.page,
            size=request.size or DEFAULT_SIZE,
            category=request.category or None,
            status=request.status or None,
        )
        return await self._products.list_encoded(query, PAGE_PB)

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
            raise ValidationFailed(field="product_id", message="is required")
        product = await self._products.adjust_stock(
            _actor(), request.product_id, request.quantity_change
        )
        return to_message(product)

    async def DeleteProduct(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._products.delete(_actor(), request.id)
        return empty_pb2.Empty()
