"""Every product route and status code of contract §2 / §8, on both backends."""

from __future__ import annotations

import csv
import io
import logging
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import structlog
from sqlalchemy import select

from arcana.bootstrap import App
from arcana.metrics import HTTP_REQUESTS
from tests.app_support import post_past_the_body_limit, routes_broken
from tests.products_support import BASE, admin_headers, create_product, user_headers

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.usefixtures("seeded_principals"),
]

PROBLEM = "application/problem+json"


def assert_problem(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status
    assert body["code"] == code
    assert {"type", "title", "detail"} <= body.keys()


async def test_create_get_shape(client: httpx.AsyncClient, container: App) -> None:
    p = await create_product(client, container, description="A thing")
    assert set(p) == {
        "id",
        "name",
        "description",
        "price",
        "stock",
        "category",
        "status",
        "created_at",
        "updated_at",
    }
    assert p["status"] == "Draft"
    assert p["price"] == 19.99
    assert p["stock"] == 5
    assert p["created_at"].endswith("Z")
    r = await client.get(f"{BASE}/{p['id']}")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == p
    # second read is a cache hit and identical
    assert (await client.get(f"{BASE}/{p['id']}")).json() == p


async def test_create_defaults(client: httpx.AsyncClient, container: App) -> None:
    r = await client.post(BASE, json={"name": "Bare", "price": 0}, headers=admin_headers(container))
    assert r.status_code == 201
    body = r.json()
    assert body["stock"] == 0
    assert body["description"] is None
    assert body["category"] is None
    assert body["price"] == 0


async def test_price_is_exact(client: httpx.AsyncClient, container: App) -> None:
    p = await create_product(client, container, price=9999999999.99)
    assert p["price"] == 9999999999.99
    async with container.uow() as uow:
        stored = await uow.products.get(p["id"])
    assert stored is not None
    assert stored.price == Decimal("9999999999.99")
    p2 = await create_product(client, container, price=0.1)
    async with container.uow() as uow:
        stored2 = await uow.products.get(p2["id"])
    assert stored2 is not None
    assert stored2.price == Decimal("0.10")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "price": 1.005},
        {"name": "x", "price": -1},
        {"name": "x", "price": "1.00"},
        {"name": "x", "price": True},
        {"name": "x", "price": 1e12},
        {"name": "", "price": 1},
        {"name": "x" * 201, "price": 1},
        {"price": 1},
        {"name": "x"},
        {"name": "x", "price": 1, "stock": -1},
        {"name": "x", "price": 1, "stock": 1.5},
        {"name": 5, "price": 1},
        [],
    ],
)
async def test_create_invalid(client: httpx.AsyncClient, container: App, body: object) -> None:
    r = await client.post(BASE, json=body, headers=admin_headers(container))
    assert_problem(r, 422, "VALIDATION_FAILED")


async def test_malformed_json(client: httpx.AsyncClient, container: App) -> None:
    r = await client.post(
        BASE,
        content=b"{not json",
        headers={**admin_headers(container), "content-type": "application/json"},
    )
    assert_problem(r, 422, "VALIDATION_FAILED")


async def test_name_of_200_chars_is_fine(client: httpx.AsyncClient, container: App) -> None:
    p = await create_product(client, container, name="n" * 200)
    assert len(p["name"]) == 200


async def test_auth_before_validation(client: httpx.AsyncClient, container: App) -> None:
    pid = str(uuid.uuid4())
    for method, url in [
        ("POST", BASE),
        ("PATCH", f"{BASE}/not-a-uuid"),
        ("POST", f"{BASE}/not-a-uuid/stock"),
        ("DELETE", f"{BASE}/not-a-uuid"),
        ("GET", f"{BASE}/export"),
        ("PATCH", f"{BASE}/{pid}"),
    ]:
        r = await client.request(method, url, content=b"{bad")
        assert_problem(r, 401, "UNAUTHORIZED")
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = await client.request(method, url, content=b"{bad", headers=user_headers(container))
        assert_problem(r, 403, "FORBIDDEN")
        r = await client.request(
            method, url, content=b"{bad", headers={"Authorization": "Bearer nonsense"}
        )
        assert_problem(r, 401, "UNAUTHORIZED")


async def test_malformed_and_missing_ids(client: httpx.AsyncClient, container: App) -> None:
    admin = admin_headers(container)
    missing = str(uuid.uuid4())
    assert_problem(await client.get(f"{BASE}/not-a-uuid"), 422, "VALIDATION_FAILED")
    assert_problem(await client.get(f"{BASE}/{missing}"), 404, "NOT_FOUND")
    assert_problem(
        await client.patch(f"{BASE}/nope", json={"name": "a"}, headers=admin),
        422,
        "VALIDATION_FAILED",
    )
    assert_problem(
        await client.patch(f"{BASE}/{missing}", json={"name": "a"}, headers=admin),
        404,
        "NOT_FOUND",
    )
    assert_problem(
        await client.post(f"{BASE}/nope/stock", json={"quantity_change": 1}, headers=admin),
        422,
        "VALIDATION_FAILED",
    )
    assert_problem(
        await client.post(f"{BASE}/{missing}/stock", json={"quantity_change": 1}, headers=admin),
        404,
        "NOT_FOUND",
    )
    assert_problem(await client.delete(f"{BASE}/nope", headers=admin), 422, "VALIDATION_FAILED")
    assert_problem(await client.delete(f"{BASE}/{missing}", headers=admin), 404, "NOT_FOUND")


async def test_patch_partial_and_status(client: httpx.AsyncClient, container: App) -> None:
    admin = admin_headers(container)
    p = await create_product(client, container, description="d")
    r = await client.patch(f"{BASE}/{p['id']}", json={"status": "active"}, headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "Active"
    assert body["name"] == p["name"]
    assert body["description"] == "d"
    assert body["updated_at"] >= p["updated_at"]
    r = await client.patch(
        f"{BASE}/{p['id']}",
        json={"name": "New", "price": 5.5, "stock": 3, "category": None, "description": None},
        headers=admin,
    )
    body = r.json()
    assert (body["name"], body["price"], body["stock"]) == ("New", 5.5, 3)
    assert body["category"] is None
    assert body["description"] is None
    assert (await client.get(f"{BASE}/{p['id']}")).json() == body
    for status in ("INACTIVE", "Draft", "ArChIvEd"):
        r = await client.patch(f"{BASE}/{p['id']}", json={"status": status}, headers=admin)
        assert r.status_code == 200
    assert r.json()["status"] == "Archived"
    # Archived is final, but re-stating it and other edits are fine
    r = await client.patch(f"{BASE}/{p['id']}", json={"status": "Active"}, headers=admin)
    assert_problem(r, 422, "VALIDATION_FAILED")
    r = await client.patch(f"{BASE}/{p['id']}", json={"status": "archived"}, headers=admin)
    assert r.status_code == 200
    r = await client.patch(f"{BASE}/{p['id']}", json={"status": "Gone"}, headers=admin)
    assert_problem(r, 422, "VALIDATION_FAILED")
    for bad in ({"price": 1.234}, {"stock": -2}, {"name": ""}, {"name": None}, {"price": "1"}):
        r = await client.patch(f"{BASE}/{p['id']}", json=bad, headers=admin)
        assert_problem(r, 422, "VALIDATION_FAILED")


async def test_stock_endpoint(client: httpx.AsyncClient, container: App) -> None:
    admin = admin_headers(container)
    p = await create_product(client, container, stock=5)
    url = f"{BASE}/{p['id']}/stock"
    r = await client.post(url, json={"quantity_change": 10}, headers=admin)
    assert r.status_code == 200
    assert r.json()["stock"] == 15
    r = await client.post(url, json={"quantity_change": -16}, headers=admin)
    assert_problem(r, 422, "VALIDATION_FAILED")
    assert (await client.get(f"{BASE}/{p['id']}")).json()["stock"] == 15
    r = await client.post(url, json={"quantity_change": -15}, headers=admin)
    assert r.json()["stock"] == 0
    for bad in ({}, {"quantity_change": "1"}, {"quantity_change": 1.5}, {"quantity_change": None}):
        assert_problem(await client.post(url, json=bad, headers=admin), 422, "VALIDATION_FAILED")


async def test_stock_events_in_outbox(client: httpx.AsyncClient, container: App) -> None:
    from arcana.adapters.tables import outbox

    admin = admin_headers(container)
    p = await create_product(client, container, stock=12)
    url = f"{BASE}/{p['id']}/stock"
    await client.post(url, json={"quantity_change": -2}, headers=admin)  # 10: low
    await client.post(url, json={"quantity_change": -1}, headers=admin)  # 9: low
    await client.post(url, json={"quantity_change": -9}, headers=admin)  # 0: out
    await client.delete(f"{BASE}/{p['id']}", headers=admin)
    async with container.uow() as uow:
        rows = (
            await uow.session.execute(
                select(outbox.c.event_type, outbox.c.data)
                .where(outbox.c.aggregate_id == p["id"])
                .order_by(outbox.c.seq)
            )
        ).all()
    types = [t for t, _ in rows]
    assert types == [
        "product.created",
        "product.updated",
        "product.low_stock",
        "product.updated",
        "product.low_stock",
        "product.updated",
        "product.out_of_stock",
        "product.deleted",
    ]
    low = [d for t, d in rows if t == "product.low_stock"]
    assert [d["data"] for d in low] == [
        {"productId": p["id"], "stock": 10},
        {"productId": p["id"], "stock": 9},
    ]
    assert rows[0][1]["data"] == {"productId": p["id"]}
    assert rows[0][1]["source"] == "arcana"


async def test_delete(client: httpx.AsyncClient, container: App) -> None:
    admin = admin_headers(container)
    p = await create_product(client, container)
    assert (await client.get(f"{BASE}/{p['id']}")).status_code == 200  # cached
    r = await client.delete(f"{BASE}/{p['id']}", headers=admin)
    assert r.status_code == 204
    assert r.content == b""
    assert_problem(await client.get(f"{BASE}/{p['id']}"), 404, "NOT_FOUND")
    assert_problem(await client.delete(f"{BASE}/{p['id']}", headers=admin), 404, "NOT_FOUND")


async def test_list_filters_and_order(client: httpx.AsyncClient, container: App) -> None:
    admin = admin_headers(container)
    ids = []
    for i in range(5):
        p = await create_product(client, container, name=f"p{i}", category="a" if i % 2 else "b")
        ids.append(p["id"])
    await client.patch(f"{BASE}/{ids[0]}", json={"status": "Active"}, headers=admin)
    r = await client.get(BASE)
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 5
    assert (body["page"], body["size"]) == (0, 10)
    assert [p["id"] for p in body["data"]] == ids[::-1]
    r = await client.get(BASE, params={"category": "a"})
    assert r.json()["total"] == 2
    r = await client.get(BASE, params={"status": "aCtIvE"})
    assert [p["id"] for p in r.json()["data"]] == [ids[0]]
    r = await client.get(BASE, params={"status": "draft", "category": "b", "size": 1, "page": 1})
    body = r.json()
    assert body["total"] == 2
    assert [p["id"] for p in body["data"]] == [ids[2]]
    assert (await client.get(BASE, params={"page": 9})).json()["data"] == []


@pytest.mark.parametrize(
    "params",
    [{"size": 0}, {"size": 101}, {"page": -1}, {"status": "bogus"}, {"page": "x"}],
)
async def test_list_invalid_query(
    client: httpx.AsyncClient, container: App, params: dict[str, object]
) -> None:
    assert_problem(await client.get(BASE, params=params), 422, "VALIDATION_FAILED")


async def test_export_csv(client: httpx.AsyncClient, container: App) -> None:
    admin = admin_headers(container)
    p1 = await create_product(client, container, name='Comma, "quoted"', description=None)
    p2 = await create_product(client, container, name="Second", price=3)
    r = await client.get(f"{BASE}/export", headers=admin)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == [
        "id",
        "name",
        "description",
        "price",
        "stock",
        "category",
        "status",
        "created_at",
        "updated_at",
    ]
    assert [row[0] for row in rows[1:]] == [p2["id"], p1["id"]]
    assert rows[2][1] == 'Comma, "quoted"'
    assert rows[1][3] == "3.00"


async def test_export_many_batches(client: httpx.AsyncClient, container: App) -> None:
    from tests.products_support import seed_products

    await seed_products(container, 2500)
    r = await client.get(f"{BASE}/export", headers=admin_headers(container))
    rows = list(csv.reader(io.StringIO(r.text)))
    ids = [row[0] for row in rows[1:]]
    assert len(ids) == 2500
    assert len(set(ids)) == 2500


async def test_cache_metrics(client: httpx.AsyncClient, container: App) -> None:
    p = await create_product(client, container)
    await client.get(f"{BASE}/{p['id']}")
    await client.get(f"{BASE}/{p['id']}")
    text = (await client.get("/metrics")).text
    assert 'arcana_cache_requests_total{cache="product",result="hit"}' in text
    assert 'arcana_cache_requests_total{cache="product",result="miss"}' in text


async def test_openapi_lists_product_routes(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "/api/v1/products/{product_id}/stock" in spec["paths"]
    assert "requestBody" in spec["paths"]["/api/v1/products"]["post"]


async def test_list_totals_follow_writes(client: httpx.AsyncClient, container: App) -> None:
    """Totals are cached; every write that changes a count moves them on at once."""
    admin = admin_headers(container)

    async def total(**params: object) -> int:
        r = await client.get(BASE, params=params)
        assert r.status_code == 200
        value: int = r.json()["total"]
        return value

    assert await total() == 0
    p = await create_product(client, container, category="x")
    assert await total() == 1
    assert await total(category="x") == 1
    assert await total(status="active") == 0
    await client.patch(f"{BASE}/{p['id']}", json={"status": "Active"}, headers=admin)
    assert await total(status="active") == 1
    await client.patch(f"{BASE}/{p['id']}", json={"category": "y"}, headers=admin)
    assert await total(category="x") == 0
    await client.post(f"{BASE}/{p['id']}/stock", json={"quantity_change": 1}, headers=admin)
    assert await total() == 1
    await client.delete(f"{BASE}/{p['id']}", headers=admin)
    assert await total() == 0
    assert await total(category="y") == 0


async def test_stock_fast_path_skips_fastapi_dependencies(
    client: httpx.AsyncClient, container: App
) -> None:
    """A plain admin stock change is answered before FastAPI's routing and dependencies (see
    ``ProductFastPaths``): with the route's services dependency broken it still works."""
    p = await create_product(client, container, stock=5)
    async with routes_broken(container) as own:
        r = await own.post(
            f"{BASE}/{p['id']}/stock", json={"quantity_change": 2}, headers=admin_headers(container)
        )
    assert r.status_code == 200, r.text
    assert r.json()["stock"] == 7


async def test_list_fast_path_builds_a_missed_page_without_the_route(
    client: httpx.AsyncClient, container: App
) -> None:
    """A plain list request whose page is not cached (after a write) is built by the fast
    path with the route's own service call: with the route's services dependency broken it
    still answers, the same bytes as the route answers once the dependency is back."""
    p = await create_product(client, container, stock=5)
    async with routes_broken(container) as own:
        r = await own.post(
            f"{BASE}/{p['id']}/stock", json={"quantity_change": 2}, headers=admin_headers(container)
        )
        assert r.status_code == 200, r.text
        fast = await own.get(f"{BASE}?size=10&page=0")  # the first read after the write
    assert fast.status_code == 200, fast.text
    assert [(i["id"], i["stock"]) for i in fast.json()["data"]] == [(p["id"], 7)]
    await container.products.cache.invalidate("lists")
    routed = await client.get(f"{BASE}?size=10&page=0&q=")  # a search term: the route
    assert routed.status_code == 200, routed.text
    assert routed.json() == fast.json()
    assert fast.headers["content-type"] == routed.headers["content-type"]


async def test_list_fast_path_build_failure_is_logged_and_the_route_answers(
    client: httpx.AsyncClient,
    container: App,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A missed page whose build fails in the fast path is logged there, and the route
    (which builds it again) answers: the client sees no difference."""
    p = await create_product(client, container, stock=5)
    build = container.products.list_encoded
    calls = 0

    async def failing_once(*args: Any, **kwargs: Any) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("page build failed")
        return await build(*args, **kwargs)

    monkeypatch.setattr(container.products, "list_encoded", failing_once)
    await container.products.cache.invalidate("lists")
    with caplog.at_level(logging.WARNING, logger="arcana.api"):
        r = await client.get(f"{BASE}?size=10&page=0")
    assert r.status_code == 200, r.text
    assert [i["id"] for i in r.json()["data"]] == [p["id"]]
    assert calls == 2  # the fast path's build, then the route's
    assert any(
        "list page build failed in the fast path (RuntimeError)" in rec.getMessage()
        for rec in caplog.records
    )


async def test_log_lines_of_a_request_carry_its_request_id(
    client: httpx.AsyncClient, container: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line logged while a request is handled has that request's id in its context (the
    README's promise), and the id is gone from the context once the request is answered."""
    seen: list[object] = []

    class Context(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(structlog.contextvars.get_contextvars().get("request_id"))

    build = container.products.list_encoded

    async def failing(*args: Any, **kwargs: Any) -> bytes:
        monkeypatch.setattr(container.products, "list_encoded", build)
        raise RuntimeError("page build failed")

    monkeypatch.setattr(container.products, "list_encoded", failing)
    await container.products.cache.invalidate("lists")
    handler = Context(logging.WARNING)
    logging.getLogger("arcana.api").addHandler(handler)
    try:
        r = await client.get(f"{BASE}?size=10&page=0", headers={"X-Request-ID": "logged-1"})
    finally:
        logging.getLogger("arcana.api").removeHandler(handler)
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "logged-1"
    assert seen == ["logged-1"]
    assert "request_id" not in structlog.contextvars.get_contextvars()


async def test_stock_fast_path_answers_as_the_route(
    client: httpx.AsyncClient, container: App
) -> None:
    """The same requests, once with a ``Content-Length`` (the fast path) and once chunked (the
    fast path declines it, so the FastAPI route answers): the same status, content type and
    body, including every error in the contract's order (401, 403, 422, 404)."""
    admin, user = admin_headers(container), user_headers(container)
    fast = await create_product(client, container, stock=5)
    routed = await create_product(client, container, stock=5)

    async def chunked(raw: bytes) -> AsyncIterator[bytes]:
        yield raw

    async def both(target: str | None, raw: bytes, headers: dict[str, str]) -> None:
        answers = []
        for p, body in ((fast, raw), (routed, chunked(raw))):
            r = await client.post(
                f"{BASE}/{target or p['id']}/stock",
                content=body,
                headers={**headers, "content-type": "application/json"},
            )
            answers.append(r)
        a, b = answers
        assert (a.status_code, a.headers["content-type"]) == (
            b.status_code,
            b.headers["content-type"],
        ), (a.text, b.text)
        assert a.headers.get("www-authenticate") == b.headers.get("www-authenticate")
        ja, jb = a.json(), b.json()
        if a.status_code == 200:
            for volatile in ("id", "updated_at", "created_at"):
                ja.pop(volatile), jb.pop(volatile)
        assert ja == jb

    missing = str(uuid.uuid4())
    await both(None, b'{"quantity_change": 3}', admin)
    await both(None, b'{"quantity_change": -100}', admin)
    await both(None, b'{"quantity_change": 2147483647}', admin)
    await both(missing, b'{"quantity_change": 1}', admin)
    for raw in (
        b"{}",
        b'{"quantity_change": "1"}',
        b"[1]",
        b"not json",
        b'{"quantity_change": 1.5}',
        b'{"quantity_change": true}',
        b'{"quantity_change": null}',
        b'{"quantity_change": 0}',
        b'{"quantity_change": 1e2}',
        b'{"quantity_change": 2147483648}',
        b'{"quantity_change": -2147483649}',
        b'{"quantity_change": 1, "quantity_change": 2}',
    ):
        await both(None, raw, admin)
    await both(None, b'{"quantity_change": 1}', user)
    await both(None, b"{}", user)
    await both(None, b'{"quantity_change": 1}', {})
    await both(None, b'{"quantity_change": 1}', {"Authorization": "Bearer not-a-token"})
    await both(None, b'{"quantity_change": 1}', {"Authorization": "Basic abc"})
    fast_now = (await client.get(f"{BASE}/{fast['id']}")).json()["stock"]
    routed_now = (await client.get(f"{BASE}/{routed['id']}")).json()["stock"]
    # 5 + 3, then + 2 from the duplicated key (the last one counts, on both paths)
    assert fast_now == routed_now == 10


async def test_stock_fast_path_body_over_the_limit_is_413(
    client: httpx.AsyncClient, container: App
) -> None:
    """A body longer than its ``Content-Length`` said, past the body limit: 413 problem, as on
    every route, not a 500 (the limit trips inside the fast path's read)."""
    from arcana.api.app import create_app

    p = await create_product(client, container, stock=5)
    token = admin_headers(container)["Authorization"].encode()
    sent = await post_past_the_body_limit(
        create_app(container), f"{BASE}/{p['id']}/stock", [(b"authorization", token)]
    )
    assert sent[0]["status"] == 413
    assert b"PAYLOAD_TOO_LARGE" in sent[1]["body"]
    assert b"PAYLOAD_TOO_LARGE" in sent[1]["body"]  # type: ignore[operator]


def _requests_counted() -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for metric in HTTP_REQUESTS.collect()
        for s in metric.samples
        if s.name.endswith("_total")
    }


async def test_fast_paths_are_counted_under_their_routes_templates(
    client: httpx.AsyncClient, container: App
) -> None:
    """A request the fast path answers is counted (and its span named) under the same route
    template as the same request answered by the route, never as ``unmatched``. The template is
    the whole path the client sends, ``/api/v1`` included, as for the routes of other areas."""
    before = _requests_counted()
    p = await create_product(client, container, stock=5)
    admin = {**admin_headers(container), "content-type": "application/json"}

    async def chunked(raw: bytes) -> AsyncIterator[bytes]:
        yield raw

    target = f"{BASE}/{p['id']}/stock"
    body = b'{"quantity_change": 1}'
    assert (await client.post(target, content=body, headers=admin)).status_code == 200  # fast
    assert (await client.post(target, content=chunked(body), headers=admin)).status_code == 200
    for _ in range(2):  # the route fills the cache, the fast path answers from it
        assert (await client.get(f"{BASE}/{p['id']}")).status_code == 200
    for _ in range(2):  # built by the fast path, then served from the cache
        assert (await client.get(f"{BASE}?size=3")).status_code == 200
    assert (await client.get(f"{BASE}?size=abc")).status_code == 422  # the route refuses it
    after = _requests_counted()
    grown = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    assert grown == {
        ("POST", "/api/v1/products", "201"): 1,
        ("POST", "/api/v1/products/{product_id}/stock", "200"): 2,
        ("GET", "/api/v1/products/{product_id}", "200"): 2,
        ("GET", "/api/v1/products", "200"): 2,
        ("GET", "/api/v1/products", "422"): 1,
    }, grown
