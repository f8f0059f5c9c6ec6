"""gRPC product service over a real channel: parity with REST, auth, status codes, health,
reflection, limits and a mixed-transport stock race."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from arcana.bootstrap import App
from arcana.lifecycle import Lifecycle
from arcana.rpc.gen.arcana.product.v1 import product_pb2 as pb
from arcana.rpc.gen.arcana.product.v1 import product_pb2_grpc as pb_grpc
from arcana.rpc.server import GrpcServer
from tests.conftest import base_settings
from tests.process import free_port
from tests.products_support import BASE, admin_headers, user_headers

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.usefixtures("seeded_principals"),
]


@pytest.fixture
async def server(container: App) -> AsyncIterator[GrpcServer]:
    srv = GrpcServer(container, "127.0.0.1", 0)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(1.0)


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.ProductServiceStub:
    return pb_grpc.ProductServiceStub(channel)


def admin_md(container: App) -> tuple[tuple[str, str], ...]:
    return (("authorization", admin_headers(container)["Authorization"]),)


def user_md(container: App) -> tuple[tuple[str, str], ...]:
    return (("authorization", user_headers(container)["Authorization"]),)


def from_message(m: Any) -> dict[str, Any]:
    """The REST JSON shape of a ``ProductResponse``."""
    return {
        "id": m.id,
        "name": m.name,
        "description": m.description or None,
        "price": m.price,
        "stock": m.stock,
        "category": m.category or None,
        "status": m.status,
        "created_at": m.created_at,
        "updated_at": m.updated_at,
    }


async def rpc_code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code()


async def test_parity_create_get_list_update(
    client: httpx.AsyncClient, container: App, stub: pb_grpc.ProductServiceStub
) -> None:
    admin = admin_headers(container)
    md = admin_md(container)
    rest = (
        await client.post(
            BASE,
            json={"name": "Lamp", "price": 12.5, "stock": 3, "category": "light"},
            headers=admin,
        )
    ).json()
    grpc_created = from_message(
        await stub.CreateProduct(
            pb.CreateProductRequest(name="Lamp", price=12.5, stock=3, category="light"),
            metadata=md,
        )
    )
    for key in ("name", "description", "price", "stock", "category", "status"):
        assert rest[key] == grpc_created[key], key
    # the same product read through both transports is identical
    for pid in (rest["id"], grpc_created["id"]):
        over_rest = (await client.get(f"{BASE}/{pid}")).json()
        over_grpc = from_message(await stub.GetProduct(pb.GetProductRequest(id=pid)))
        assert over_rest == over_grpc
    # updates: status case-insensitive, partial, through either transport
    r = (
        await client.patch(f"{BASE}/{rest['id']}", json={"status": "active"}, headers=admin)
    ).json()
    g = from_message(
        await stub.UpdateProduct(
            pb.UpdateProductRequest(id=grpc_created["id"], status="active"), metadata=md
        )
    )
    assert r["status"] == g["status"] == "Active"
    assert r["name"] == g["name"] == "Lamp"
    g = from_message(
        await stub.UpdateProduct(
            pb.UpdateProductRequest(id=grpc_created["id"], category="", price=1.25), metadata=md
        )
    )
    assert g["category"] is None
    assert g["price"] == 1.25
    assert (await client.get(f"{BASE}/{g['id']}")).json() == g
    # lists agree, has_next from the total
    for params in (
        {"size": 1},
        {"size": 1, "page": 1},
        {"status": "ACTIVE"},
        {"category": "light"},
    ):
        rest_page = (await client.get(BASE, params=params)).json()
        grpc_page = await stub.ListProducts(pb.ListProductsRequest(**params))
        assert [p["id"] for p in rest_page["data"]] == [p.id for p in grpc_page.products]
        assert rest_page["total"] == grpc_page.total
        size = params.get("size", 10)
        page = params.get("page", 0)
        assert grpc_page.has_next == ((page + 1) * size < grpc_page.total)
    default = await stub.ListProducts(pb.ListProductsRequest())
    assert default.size == 10
    assert default.total == 2
    assert not default.has_next


async def test_parity_errors(
    client: httpx.AsyncClient, container: App, stub: pb_grpc.ProductServiceStub
) -> None:
    admin = admin_headers(container)
    md = admin_md(container)
    p = (await client.post(BASE, json={"name": "P", "price": 1, "stock": 2}, headers=admin)).json()
    missing = str(uuid.uuid4())
    cases: list[tuple[int, grpc.StatusCode, Any, Any]] = [
        (
            422,
            grpc.StatusCode.INVALID_ARGUMENT,
            client.get(f"{BASE}/bad-id"),
            stub.GetProduct(pb.GetProductRequest(id="bad-id")),
        ),
        (
            404,
            grpc.StatusCode.NOT_FOUND,
            client.get(f"{BASE}/{missing}"),
            stub.GetProduct(pb.GetProductRequest(id=missing)),
        ),
        (
            422,
            grpc.StatusCode.FAILED_PRECONDITION,
            client.post(f"{BASE}/{p['id']}/stock", json={"quantity_change": -3}, headers=admin),
            stub.UpdateStock(
                pb.UpdateStockRequest(product_id=p["id"], quantity_change=-3), metadata=md
            ),
        ),
        (
            422,
            grpc.StatusCode.INVALID_ARGUMENT,
            client.post(BASE, json={"name": "x", "price": 1.001}, headers=admin),
            stub.CreateProduct(pb.CreateProductRequest(name="x", price=1.001), metadata=md),
        ),
        (
            422,
            grpc.StatusCode.INVALID_ARGUMENT,
            client.post(BASE, json={"name": "", "price": 1}, headers=admin),
            stub.CreateProduct(pb.CreateProductRequest(name="", price=1), metadata=md),
        ),
        (
            422,
            grpc.StatusCode.INVALID_ARGUMENT,
            client.get(BASE, params={"size": 101}),
            stub.ListProducts(pb.ListProductsRequest(size=101)),
        ),
        (
            422,
            grpc.StatusCode.INVALID_ARGUMENT,
            client.get(BASE, params={"status": "nope"}),
            stub.ListProducts(pb.ListProductsRequest(status="nope")),
        ),
        (
            404,
            grpc.StatusCode.NOT_FOUND,
            client.delete(f"{BASE}/{missing}", headers=admin),
            stub.DeleteProduct(pb.DeleteProductRequest(id=missing), metadata=md),
        ),
        (
            401,
            grpc.StatusCode.UNAUTHENTICATED,
            client.delete(f"{BASE}/{p['id']}"),
            stub.DeleteProduct(pb.DeleteProductRequest(id=p["id"])),
        ),
        (
            403,
            grpc.StatusCode.PERMISSION_DENIED,
            client.delete(f"{BASE}/{p['id']}", headers=user_headers(container)),
            stub.DeleteProduct(pb.DeleteProductRequest(id=p["id"]), metadata=user_md(container)),
        ),
    ]
    for http_status, grpc_status, rest_call, grpc_call in cases:
        assert (await rest_call).status_code == http_status
        assert await rpc_code(grpc_call) == grpc_status
    # Archived is final through both
    await stub.UpdateProduct(pb.UpdateProductRequest(id=p["id"], status="Archived"), metadata=md)
    r = await client.patch(f"{BASE}/{p['id']}", json={"status": "Draft"}, headers=admin)
    assert r.status_code == 422
    code = await rpc_code(
        stub.UpdateProduct(pb.UpdateProductRequest(id=p["id"], status="Draft"), metadata=md)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    # delete through gRPC, gone through REST
    assert isinstance(
        await stub.DeleteProduct(pb.DeleteProductRequest(id=p["id"]), metadata=md), empty_pb2.Empty
    )
    assert (await client.get(f"{BASE}/{p['id']}")).status_code == 404


async def test_auth_on_every_write(container: App, stub: pb_grpc.ProductServiceStub) -> None:
    pid = str(uuid.uuid4())
    writes = [
        (stub.CreateProduct, pb.CreateProductRequest(name="bad", price=-1)),
        (stub.UpdateProduct, pb.UpdateProductRequest(id="bad", name="")),
        (stub.UpdateStock, pb.UpdateStockRequest(product_id=pid, quantity_change=1)),
        (stub.DeleteProduct, pb.DeleteProductRequest(id=pid)),
    ]
    for method, request in writes:
        # authentication before validation, exactly as REST
        assert await rpc_code(method(request)) == grpc.StatusCode.UNAUTHENTICATED
        assert (
            await rpc_code(method(request, metadata=(("authorization", "Bearer junk"),)))
            == grpc.StatusCode.UNAUTHENTICATED
        )
        assert (
            await rpc_code(method(request, metadata=(("authorization", "Basic abc"),)))
            == grpc.StatusCode.UNAUTHENTICATED
        )
        assert (
            await rpc_code(method(request, metadata=user_md(container)))
            == grpc.StatusCode.PERMISSION_DENIED
        )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.DeleteProduct(pb.DeleteProductRequest(id=pid))
    assert "UNAUTHORIZED" in (info.value.details() or "")
    assert "Traceback" not in (info.value.details() or "")


async def test_request_id_and_metrics(
    client: httpx.AsyncClient, container: App, stub: pb_grpc.ProductServiceStub
) -> None:
    call = stub.GetProduct(
        pb.GetProductRequest(id=str(uuid.uuid4())), metadata=(("x-request-id", "abc-123"),)
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert ("x-request-id", "abc-123") in tuple(info.value.trailing_metadata() or ())
    text = (await client.get("/metrics")).text
    assert 'arcana_grpc_requests_total{code="NOT_FOUND",method="GetProduct"}' in text


async def test_health_and_reflection(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "arcana.product.v1.ProductService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask() -> AsyncIterator[Any]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        yield reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="arcana.product.v1.ProductService"
        )

    replies = [r async for r in refl.ServerReflectionInfo(ask())]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"arcana.product.v1.ProductService", "grpc.health.v1.Health"} <= names
    assert replies[1].file_descriptor_response.file_descriptor_proto


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_health_not_serving_without_database(backend: str, tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    process = Lifecycle.build(
        base_settings(database_url=url, db_connect_timeout=1, var_dir=tmp_path)
    )
    container = process.app
    srv = GrpcServer(container, "127.0.0.1", 0)
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            reply = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="")
            )
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            code = await rpc_code(
                pb_grpc.ProductServiceStub(ch).GetProduct(
                    pb.GetProductRequest(id=str(uuid.uuid4()))
                )
            )
            assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        await srv.stop(1.0)
        await process.stop()


async def test_limits(container: App, stub: pb_grpc.ProductServiceStub) -> None:
    huge = "x" * (container.settings.grpc.max_message_bytes + 10)
    code = await rpc_code(
        stub.CreateProduct(
            pb.CreateProductRequest(name=huge, price=1), metadata=admin_md(container)
        )
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    code = await rpc_code(stub.ListProducts(pb.ListProductsRequest(), timeout=0.000001))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_mixed_transport_stock_race(
    client: httpx.AsyncClient, container: App, stub: pb_grpc.ProductServiceStub
) -> None:
    admin = admin_headers(container)
    md = admin_md(container)
    p = (await client.post(BASE, json={"name": "R", "price": 1, "stock": 30}, headers=admin)).json()

    async def over_grpc() -> bool:
        try:
            await stub.UpdateStock(
                pb.UpdateStockRequest(product_id=p["id"], quantity_change=-1), metadata=md
            )
            return True
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            return False

    async def over_rest() -> bool:
        r = await client.post(
            f"{BASE}/{p['id']}/stock", json={"quantity_change": -1}, headers=admin
        )
        assert r.status_code in (200, 422)
        return r.status_code == 200

    results = await asyncio.gather(*(f() for _ in range(25) for f in (over_grpc, over_rest)))
    assert sum(results) == 30
    final = await stub.GetProduct(pb.GetProductRequest(id=p["id"]))
    assert final.stock == 0
    assert (await client.get(f"{BASE}/{p['id']}")).json()["stock"] == 0


class _StuckCache:
    """A cache whose reads never return; records that the server cancelled them."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def get(self, key: str) -> bytes | None:
        self.entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return None

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        return None

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        return False

    async def delete(self, *keys: str) -> None:
        return None

    async def ping(self) -> bool:
        return True


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
@pytest.mark.overrides(cache=_StuckCache)
async def test_deadline_stops_server_work(backend: str, container: App) -> None:
    stuck = container.cache
    assert isinstance(stuck, _StuckCache)
    srv = GrpcServer(container, "127.0.0.1", 0)
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            code = await rpc_code(
                pb_grpc.ProductServiceStub(ch).GetProduct(
                    pb.GetProductRequest(id=str(uuid.uuid4())), timeout=0.5
                )
            )
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert stuck.entered.is_set()
        await asyncio.wait_for(stuck.cancelled.wait(), 5)
    finally:
        await srv.stop(1.0)


async def test_get_product_answers_the_cached_protobuf_never_a_stale_one(
    client: httpx.AsyncClient, container: App, stub: pb_grpc.ProductServiceStub
) -> None:
    admin = admin_headers(container)
    p = (await client.post(BASE, json={"name": "C", "price": 2, "stock": 5}, headers=admin)).json()
    first = await stub.GetProduct(pb.GetProductRequest(id=p["id"]))
    assert (await client.get(f"{BASE}/{p['id']}")).json() == from_message(first)
    gen = await container.products.cache.existing_generation(p["id"])
    assert gen is not None
    # the protobuf bytes sit beside the JSON under the same generation
    assert await container.cache.get(f"product:{p['id']}:{gen}:pb") == first.SerializeToString()
    assert await container.cache.get(f"product:{p['id']}:{gen}:json") is not None
    assert await stub.GetProduct(pb.GetProductRequest(id=p["id"])) == first
    # a write over REST retires both forms: the next gRPC read is fresh
    r = await client.post(f"{BASE}/{p['id']}/stock", json={"quantity_change": -2}, headers=admin)
    assert r.status_code == 200
    assert (await stub.GetProduct(pb.GetProductRequest(id=p["id"]))).stock == 3
    assert await container.products.cache.existing_generation(p["id"]) != gen


def _calls(method: str, code: str) -> float:
    return (
        REGISTRY.get_sample_value("arcana_grpc_requests_total", {"method": method, "code": code})
        or 0.0
    )


async def test_cached_get_product_is_still_counted_and_carries_a_request_id(
    client: httpx.AsyncClient, container: App, stub: pb_grpc.ProductServiceStub
) -> None:
    """A cache hit takes the short path (no id parsing, no interceptor chain) and still gets
    the metrics and the request id of every call."""
    admin = admin_headers(container)
    p = (await client.post(BASE, json={"name": "H", "price": 1, "stock": 1}, headers=admin)).json()
    await stub.GetProduct(pb.GetProductRequest(id=p["id"]))  # fills the cache
    ok = _calls("GetProduct", "OK")
    call = stub.GetProduct(pb.GetProductRequest(id=p["id"]), metadata=(("x-request-id", "hit-1"),))
    assert (await call).id == p["id"]
    assert ("x-request-id", "hit-1") in tuple(await call.trailing_metadata() or ())
    assert _calls("GetProduct", "OK") == ok + 1
    # an id in another spelling is the same product (parsed on the general path)
    assert (await stub.GetProduct(pb.GetProductRequest(id=p["id"].upper()))).id == p["id"]
    assert _calls("GetProduct", "OK") == ok + 2
    bad = _calls("GetProduct", "INVALID_ARGUMENT")
    assert await rpc_code(stub.GetProduct(pb.GetProductRequest(id="nope"))) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert _calls("GetProduct", "INVALID_ARGUMENT") == bad + 1


async def test_health_check_is_instrumented_like_the_product_service(
    channel: grpc.aio.Channel,
) -> None:
    """Health is registered through the same instrumentation: metrics, request id and
    malformed bytes → INVALID_ARGUMENT."""
    ok = _calls("Check", "OK")
    call = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert (await call).status == health_pb2.HealthCheckResponse.SERVING
    assert any(key == "x-request-id" for key, _ in await call.trailing_metadata() or ())
    assert _calls("Check", "OK") == ok + 1
    raw = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    bad = _calls("Check", "INVALID_ARGUMENT")
    assert await rpc_code(raw(b"\x0a\xff\xff\xff\xff\x0f")) == grpc.StatusCode.INVALID_ARGUMENT
    assert _calls("Check", "INVALID_ARGUMENT") == bad + 1


async def test_concurrent_calls_each_see_only_their_own_metadata(
    client: httpx.AsyncClient, container: App, stub: pb_grpc.ProductServiceStub
) -> None:
    """The handler grpc finds for a call carries that call's metadata (grpc has already read
    it to find the handler): under many calls in flight at once, mixing readers with admin and
    user writers, each call echoes its own request id and is authorized by its own token."""
    admin = admin_headers(container)
    p = (await client.post(BASE, json={"name": "M", "price": 1, "stock": 0}, headers=admin)).json()
    await stub.GetProduct(pb.GetProductRequest(id=p["id"]))  # cached from here on
    admin_token, user_token = admin_md(container)[0], user_md(container)[0]

    async def read(i: int) -> None:
        call = stub.GetProduct(
            pb.GetProductRequest(id=p["id"]), metadata=(("x-request-id", f"read-{i}"),)
        )
        assert (await call).id == p["id"]
        assert ("x-request-id", f"read-{i}") in tuple(await call.trailing_metadata() or ())

    async def write(i: int, as_admin: bool) -> None:
        token = admin_token if as_admin else user_token
        call = stub.UpdateStock(
            pb.UpdateStockRequest(product_id=p["id"], quantity_change=1),
            metadata=(token, ("x-request-id", f"write-{i}")),
        )
        if as_admin:
            await call
            trailing = await call.trailing_metadata()
        else:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            trailing = info.value.trailing_metadata()
        assert ("x-request-id", f"write-{i}") in tuple(trailing or ())

    calls: list[Any] = []
    for i in range(120):
        calls.append(read(i))
        calls.append(write(i, as_admin=i % 2 == 0))
    await asyncio.gather(*calls)
    assert (await stub.GetProduct(pb.GetProductRequest(id=p["id"]))).stock == 60
