"""``/api/v1/products``: thin routes over ``ProductService``.

Bodies are read by hand after the auth dependencies ran, so a bad body without a bearer is
401, not 422 (contract §8). ``GET /products/{id}`` answers the cached JSON bytes as they are:
no database round trip and no model validation on a hit.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from arcana.api.deps import AdminPrincipal, ServicesDep
from arcana.api.schemas_products import (
    ProductCreate,
    ProductList,
    ProductRead,
    ProductUpdate,
    StockChange,
    json_body,
)
from arcana.domain.products import NewProduct, Product, ProductChanges, ProductQuery
from arcana.domain.timestamps import iso_z
from arcana.errors import ArcanaError, ValidationFailed
from arcana.services.products import product_to_json

router = APIRouter(prefix="/products", tags=["products"])

JSON = "application/json"
EXPORT_COLUMNS = (
    "id",
    "name",
    "description",
    "price",
    "stock",
    "category",
    "status",
    "created_at",
    "updated_at",
)
_UPDATABLE = ("name", "description", "price", "stock", "category", "status")


def _invalid(field: str, msg: str) -> ValidationFailed:
    return ValidationFailed(
        f"{field}: {msg}", errors=[{"loc": ["body", field], "msg": msg, "type": "value_error"}]
    )


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationFailed(
            "The request body is not valid JSON",
            errors=[{"loc": ["body"], "msg": "invalid JSON", "type": "json_invalid"}],
        ) from None
    if not isinstance(body, dict):
        raise _invalid("body", "must be a JSON object")
    return body


def _check_types(body: dict[str, Any]) -> None:
    """JSON types the domain checks do not cover: a price is a number, never a string."""
    for field in ("name", "description", "category", "status"):
        value = body.get(field)
        if value is not None and not isinstance(value, str):
            raise _invalid(field, "must be a string")
    price = body.get("price")
    if price is not None and (isinstance(price, bool) or not isinstance(price, int | float)):
        raise _invalid("price", "must be a number")
    stock = body.get("stock")
    if stock is not None and (isinstance(stock, bool) or not isinstance(stock, int)):
        raise _invalid("stock", "must be an integer")


def _json(body: bytes, status: int = 200) -> Response:
    return Response(content=body, status_code=status, media_type=JSON)


@router.get(
    "/export",
    summary="Export the whole catalog as CSV (admin, audited)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def export_products(principal: AdminPrincipal, services: ServicesDep) -> Response:
    batches = services.products.export_batches(principal.user_id)
    # The first batch is read before answering, so a database outage is still a 503.
    first = await anext(batches, None)

    def encode(rows: list[Product], header: bool = False) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        if header:
            writer.writerow(EXPORT_COLUMNS)
        for p in rows:
            writer.writerow(
                (
                    p.id,
                    neutralise_cell(p.name),
                    neutralise_cell(p.description or ""),
                    str(p.price),
                    p.stock,
                    neutralise_cell(p.category or ""),
                    p.status.value,
                    iso_z(p.created_at),
                    iso_z(p.updated_at),
                )
            )
        return buf.getvalue()

    async def stream() -> AsyncIterator[str]:
        yield encode(first or [], header=True)
        if first is None:
            return
        async for batch in batches:
            yield encode(batch)

    return StreamingResponse(
        stream(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="products.csv"'},
    )


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: str) -> str:
    """OWASP CSV-injection rule: a cell a spreadsheet would run as a formula gets a leading
    ``'`` so it shows as text (contract §2)."""
    return "'" + value if value.startswith(_FORMULA_START) else value


@router.get("", response_model=ProductList, summary="List products, newest first")
async def list_products(
    services: ServicesDep,
    page: Annotated[int, Query(ge=0, le=10_000_000, description="0-based page")] = 0,
    size: Annotated[int, Query(ge=1, le=100)] = 10,
    category: Annotated[str | None, Query(max_length=100)] = None,
    status: Annotated[str | None, Query(description="Case-insensitive status")] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Case-insensitive substring of the name")
    ] = None,
) -> Response:
    query = ProductQuery.build(
        page=page, size=size, category=category, status=status, name_contains=q
    )
    return _json(await services.products.list_json(query))


@router.get("/{product_id}", response_model=ProductRead, summary="Get a product (cached)")
async def get_product(product_id: str, request: Request) -> Response:
    body = await request.app.state.services.products.get_json(product_id)
    return Response(content=body, media_type=JSON)


@router.post(
    "",
    status_code=201,
    response_model=ProductRead,
    summary="Create a product (admin); it starts as Draft",
    openapi_extra=json_body(ProductCreate),
)
async def create_product(
    request: Request, principal: AdminPrincipal, services: ServicesDep
) -> Response:
    body = await _json_object(request)
    _check_types(body)
    if "name" not in body:
        raise _invalid("name", "field required")
    if "price" not in body:
        raise _invalid("price", "field required")
    new = NewProduct.build(
        name=body["name"],
        price=body["price"],
        description=body.get("description"),
        stock=body.get("stock"),
        category=body.get("category"),
    )
    product = await services.products.create(principal.user_id, new)
    return _json(product_to_json(product), 201)


@router.patch(
    "/{product_id}",
    response_model=ProductRead,
    summary="Partially update a product (admin); Archived is final",
    openapi_extra=json_body(ProductUpdate),
)
async def update_product(
    product_id: str, request: Request, principal: AdminPrincipal, services: ServicesDep
) -> Response:
    body = await _json_object(request)
    _check_types(body)
    changes = ProductChanges.build({k: v for k, v in body.items() if k in _UPDATABLE})
    product = await services.products.update(principal.user_id, product_id, changes)
    return _json(product_to_json(product))


@router.post(
    "/{product_id}/stock",
    response_model=ProductRead,
    summary="Change stock atomically (admin); below 0 is 422 and changes nothing",
    openapi_extra=json_body(StockChange),
)
async def update_stock(
    product_id: str, request: Request, principal: AdminPrincipal, services: ServicesDep
) -> Response:
    body = await _json_object(request)
    change = body.get("quantity_change")
    if change is None:
        raise _invalid("quantity_change", "field required")
    if isinstance(change, bool) or not isinstance(change, int):
        raise _invalid("quantity_change", "must be an integer")
    product = await services.products.adjust_stock(principal.user_id, product_id, change)
    return _json(product_to_json(product))


@router.delete("/{product_id}", status_code=204, summary="Delete a product (admin)")
async def delete_product(
    product_id: str, principal: AdminPrincipal, services: ServicesDep
) -> Response:
    await services.products.delete(principal.user_id, product_id)
    return Response(status_code=204)


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_JSON_HEADER = (b"content-type", b"application/json")


class CachedProductFastPath:
    """Pure-ASGI fast path for cache hits of ``GET {prefix}/products/{id}`` and of list pages
    (``GET {prefix}/products?page=&size=&category=&status=``).

        A hit is answered with the cached bytes before FastAPI's routing and dependency machinery
        runs (they cost more than the hit itself). Anything else — a miss, a non-canonical id, any
        other route — goes on to the normal route unchanged, which answers the same bytes. It sits
        inside ``RequestContextMiddleware``, so request ids and HTTP metrics still apply; the route
        is put in the scope so metrics carry the route template.
    """

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = f"{prefix}{router.prefix}/"
        self._length = len(self.prefix) + 36
        self._list_path = f"{prefix}{router.prefix}"
        self._routes: dict[str, BaseRoute] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            body: bytes | None = None
            if len(path) == self._length and path.startswith(self.prefix):
                product_id = path[-36:]
                if _CANONICAL_UUID.fullmatch(product_id):
                    body = await scope["app"].state.services.products.cached_json(product_id)
            elif path == self._list_path:
                query = _simple_list_query(scope["query_string"])
                if query is not None:
                    body = await scope["app"].state.services.products.cached_list_json(query)
            if body is not None:
                scope["route"] = self._find_route(scope["app"], scope)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [_JSON_HEADER, (b"content-length", str(len(body)).encode())],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _find_route(self, app: Any, scope: Scope) -> BaseRoute | None:
        key = "list" if scope["path"] == self._list_path else "item"
        if key not in self._routes:
            routes: list[BaseRoute] = app.router.routes
            for route in routes:
                match, _ = route.matches(scope)
                if match is Match.FULL:
                    self._routes[key] = route
                    break
        return self._routes.get(key)


_LIST_PARAMS = frozenset({b"page", b"size", b"category", b"status"})


def _simple_list_query(raw: bytes) -> ProductQuery | None:
    """The query of a plain list request (``page``, ``size``, ``category``, ``status``, each at
    most once, no escapes), or ``None``: anything else goes to the route, which validates it
    and answers errors. Only a query the route accepted can have a cached page."""
    values: dict[bytes, bytes] = {}
    if raw:
        if b"%" in raw or b"+" in raw:
            return None
        for part in raw.split(b"&"):
            name, sep, value = part.partition(b"=")
            if not sep or name not in _LIST_PARAMS or name in values:
                return None
            values[name] = value
    page_raw, size_raw = values.get(b"page", b"0"), values.get(b"size", b"10")
    if not (page_raw.isdigit() and size_raw.isdigit()):
        return None
    try:
        page, size = int(page_raw), int(size_raw)
        category = values[b"category"].decode() if b"category" in values else None
        if category is not None and len(category) > 100:
            return None
        status = values[b"status"].decode() if b"status" in values else None
        return ProductQuery.build(page=page, size=size, category=category, status=status)
    except (ValueError, ArcanaError):
        return None
