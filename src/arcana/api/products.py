"""``/api/v1/products``: thin routes over ``ProductService``.

Bodies are read by hand after the auth dependencies ran, so a bad body without a bearer is
401, not 422 (contract §8). ``GET /products/{id}`` answers the cached JSON bytes as they are:
no database round trip and no model validation on a hit.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from arcana.api.deps import AdminPrincipal, ServicesDep
from arcana.api.errors import arcana_error_answer
from arcana.api.fast_path import (
    JSON_HEADER,
    plain_bearer,
    read_body,
    replay,
    route_of,
    send_json,
)
from arcana.api.product_json import PAGE_JSON, PRODUCT_JSON, product_to_json
from arcana.api.schemas_products import (
    ProductCreate,
    ProductList,
    ProductRead,
    ProductUpdate,
    StockChange,
    int_limits,
    json_body,
    text_limits,
)
from arcana.domain.identity import Role
from arcana.domain.products import (
    CATEGORY,
    CHANGEABLE,
    PAGE,
    QUANTITY_CHANGE,
    SEARCH,
    SIZE,
    NewProduct,
    Product,
    ProductChanges,
    ProductQuery,
    is_canonical_product_id,
    require,
)
from arcana.domain.timestamps import iso_z
from arcana.errors import ArcanaError, ValidationFailed
from arcana.services.identity import IdentityService

log = logging.getLogger("arcana.api")

router = APIRouter(prefix="/api/v1/products", tags=["products"])

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
        raise ValidationFailed(
            "body: must be a JSON object",
            errors=[{"loc": ["body"], "msg": "must be a JSON object", "type": "value_error"}],
        )
    return body


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
    page: Annotated[int, Query(**int_limits(PAGE), description="0-based page")] = 0,
    size: Annotated[int, Query(**int_limits(SIZE))] = 10,
    category: Annotated[str | None, Query(**text_limits(CATEGORY))] = None,
    status: Annotated[str | None, Query(description="Case-insensitive status")] = None,
    q: Annotated[
        str | None,
        Query(**text_limits(SEARCH), description="Case-insensitive substring of the name"),
    ] = None,
) -> Response:
    query = ProductQuery.build(
        page=page, size=size, category=category, status=status, name_contains=q
    )
    return _json(await services.products.list_encoded(query, PAGE_JSON))


@router.get("/{product_id}", response_model=ProductRead, summary="Get a product (cached)")
async def get_product(product_id: str, request: Request) -> Response:
    body = await request.app.state.services.products.get_encoded(product_id, PRODUCT_JSON)
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
    new = NewProduct.from_fields(await _json_object(request))
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
    changes = ProductChanges.build({k: v for k, v in body.items() if k in CHANGEABLE})
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
    change = require(await _json_object(request), QUANTITY_CHANGE.field)
    product = await services.products.adjust_stock(principal.user_id, product_id, change)
    return _json(product_to_json(product))


@router.delete("/{product_id}", status_code=204, summary="Delete a product (admin)")
async def delete_product(
    product_id: str, principal: AdminPrincipal, services: ServicesDep
) -> Response:
    await services.products.delete(principal.user_id, product_id)
    return Response(status_code=204)


_STOCK_SUFFIX = "/stock"


class ProductFastPaths:
    """Pure-ASGI fast paths for the hot product routes, before FastAPI's routing and dependency
    machinery runs (in profiles they cost more than the work of these routes):

    - cache hits of ``GET /api/v1/products/{id}``, answered with the cached bytes, and list
      pages (``GET /api/v1/products?page=&size=&category=&status=``), cached or built by the
      route's own service call;
    - ``POST /api/v1/products/{id}/stock`` with a plain ``Bearer`` token of an admin and a
      ``Content-Length`` body that is a valid change (see ``_stock``).

    Anything else — a miss, a non-canonical id, a request that fails authentication or
    validation, any other route — goes on to the normal route unchanged (with the body it
    already read), which answers exactly as before. It sits inside ``RequestContextMiddleware``,
    so request ids, the body limit and HTTP metrics still apply; the route is put in the scope
    so metrics carry the route template.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.prefix = f"{router.prefix}/"
        self._length = len(self.prefix) + 36
        self._stock_length = self._length + len(_STOCK_SUFFIX)
        self._list_path = router.prefix
        self._routes: dict[str, BaseRoute] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            target: str = scope["path"]
            if (
                len(target) == self._stock_length
                and target.endswith(_STOCK_SUFFIX)
                and target.startswith(self.prefix)
            ):
                await self._stock(scope, receive, send, target[len(self.prefix) : self._length])
                return
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            body: bytes | None = None
            if len(path) == self._length and path.startswith(self.prefix):
                product_id = path[-36:]
                if is_canonical_product_id(product_id):
                    catalog = scope["app"].state.services.products
                    body = catalog.cached_encoded_now(product_id, PRODUCT_JSON)
                    if body is None:
                        body = await catalog.cached_encoded(product_id, PRODUCT_JSON)
            elif path == self._list_path:
                query = _simple_list_query(scope["query_string"])
                if query is not None:
                    catalog = scope["app"].state.services.products
                    body = await catalog.cached_list_encoded(query, PAGE_JSON)
                    if body is None:
                        # A page built again (after a write, or expired): the route's own
                        # call for this query. Should it fail, nothing was sent and a read has
                        # nothing to undo: the route reads again and answers the error.
                        try:
                            body = await catalog.list_encoded(query, PAGE_JSON)
                        except Exception as exc:
                            log.warning(
                                "list page build failed in the fast path (%s); the route "
                                "reads again",
                                type(exc).__name__,
                                exc_info=exc,
                            )
            if body is not None:
                scope["route"] = self._find_route(scope)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [JSON_HEADER, (b"content-length", str(len(body)).encode())],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    async def _stock(self, scope: Scope, receive: Receive, send: Send, product_id: str) -> None:
        """The stock route's work without FastAPI's: the same bearer check and role check as
        ``AdminPrincipal``, the same body rules as ``update_stock``, the same service call and
        the same answers. Only once the change is under way are errors answered here (by the
        app's own error rendering): before that, nothing has happened, and the normal route
        answers (401, 403 and 422 in the contract's order)."""
        services = scope["app"].state.services
        token = plain_bearer(scope["headers"])
        content_length = -1
        for name, value in scope["headers"]:
            if name == b"content-length":
                content_length = int(value) if value.isdigit() else -1
        if token is None or content_length < 0 or not is_canonical_product_id(product_id):
            await self.app(scope, receive, send)
            return
        try:
            principal = IdentityService.require_role(
                await services.identity.authenticate(token), Role.ADMIN
            )
        except ArcanaError:
            await self.app(scope, receive, send)
            return
        read = await read_body(scope, receive, send)
        if read is None:  # refused by the body limit, and answered
            return
        raw, pending = read
        if pending is not None:  # the client left: let the route see it
            await self.app(scope, replay(raw, pending, receive), send)
            return
        try:
            body = orjson.loads(raw)
            change = require(body, QUANTITY_CHANGE.field) if isinstance(body, dict) else None
        except (orjson.JSONDecodeError, ArcanaError):
            change = None
        if change is None:
            await self.app(scope, replay(raw, None, receive), send)
            return
        scope["route"] = self._find_route(scope)
        try:
            product = await services.products.adjust_stock(principal.user_id, product_id, change)
        except ArcanaError as exc:
            await arcana_error_answer(exc, Request(scope))(scope, receive, send)
            return
        await send_json(send, product_to_json(product))

    def _find_route(self, scope: Scope) -> BaseRoute | None:
        """The route the normal routing would put in the scope (see ``route_of``)."""
        path = scope["path"]
        key = "list" if path == self._list_path else "stock" if path.endswith("/stock") else "item"
        if key not in self._routes:
            endpoints: dict[str, Callable[..., Any]] = {
                "list": list_products,
                "stock": update_stock,
                "item": get_product,
            }
            route = route_of(router, endpoints[key])
            if route is None:
                return None
            self._routes[key] = route
        return self._routes[key]


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
        status = values[b"status"].decode() if b"status" in values else None
        return ProductQuery.build(page=page, size=size, category=category, status=status)
    except (ValueError, ArcanaError):
        return None
