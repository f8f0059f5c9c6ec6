"""Hostile gRPC clients: malformed protobuf bytes, odd metadata, a 1 ms deadline. The server
answers a status (never a crash or a stack trace) and keeps serving."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from arcana.bootstrap import App
from arcana.rpc.gen.arcana.product.v1 import product_pb2 as pb
from arcana.rpc.gen.arcana.product.v1 import product_pb2_grpc as pb_grpc
from arcana.rpc.server import GrpcServer
from tests.auth_support import user_token

pytestmark = pytest.mark.reliability

SERVICE = "/arcana.product.v1.ProductService/"

MALFORMED = [
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # an endless varint
    b"\x0a\xff\xff\xff\xff\x0f",  # field 1, length 4 GiB, no bytes
    b"\x0a\x05ab",  # length 5, 2 bytes
    b"\x08\x01\x0a",  # wrong wire type for a string field, then truncated
    b"\x0a\x02\xc3\x28",  # field 1 (string) with invalid UTF-8
    b"\x07",  # wire type 7 does not exist
    bytes(range(256)),
]


@pytest.fixture
async def channel(container: App) -> AsyncIterator[grpc.aio.Channel]:
    srv = GrpcServer(container, "127.0.0.1", 0)
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            yield ch
    finally:
        await srv.stop(1.0)


async def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


async def _still_serving(channel: grpc.aio.Channel) -> None:
    resp = await pb_grpc.ProductServiceStub(channel).ListProducts(pb.ListProductsRequest(size=1))
    assert resp.total >= 0


@pytest.mark.parametrize("method", ["GetProduct", "CreateProduct", "UpdateStock", "ListProducts"])
async def test_malformed_protobuf_bytes(
    channel: grpc.aio.Channel, container: App, method: str
) -> None:
    _, token = await user_token(container, admin=True)
    raw = channel.unary_unary(
        SERVICE + method,
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    refused = 0
    for payload in MALFORMED:
        try:
            await raw(payload, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
            continue  # some garbage happens to parse (unknown fields are skipped)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
        refused += 1
        # A validation error, as for any other bad input; never UNKNOWN/INTERNAL.
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (
            payload,
            code,
            details,
        )
        assert "Traceback" not in details
    assert refused >= 4
    await _still_serving(channel)


@pytest.mark.parametrize(
    "metadata",
    [
        (("authorization", "Bearer"),),
        (("authorization", "Bearer " + "x" * 7000),),
        (("authorization", "bearer  "),),
        (("authorization", "Bearer a.b.c"),),
        (("authorization", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),),
        (("authorization", "Bearer x"), ("authorization", "Bearer y")),
        (("authorization-bin", b"\x00\x01\x02"),),
        (("x-request-id", "../../etc/passwd; rm -rf /" + "x" * 500),),
    ],
    ids=["empty", "huge", "blank", "three-dots", "alg-none", "twice", "binary", "odd-request-id"],
)
async def test_missing_and_invalid_metadata(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, Any], ...]
) -> None:
    stub = pb_grpc.ProductServiceStub(channel)
    try:
        call = stub.CreateProduct(pb.CreateProductRequest(name="x", price=1), metadata=metadata)
        code, details = await _code(call)
    except ValueError:  # the client library itself refuses to send it
        return
    assert code == grpc.StatusCode.UNAUTHENTICATED, (code, details)
    assert "Traceback" not in details
    await _still_serving(channel)


async def test_one_millisecond_deadline(channel: grpc.aio.Channel, container: App) -> None:
    """Reads and writes with a 1 ms deadline end DEADLINE_EXCEEDED (or finish in time); a
    write either happened entirely or not at all, and the server keeps serving."""
    _, token = await user_token(container, admin=True)
    md = (("authorization", f"Bearer {token}"),)
    stub = pb_grpc.ProductServiceStub(channel)
    created = await stub.CreateProduct(
        pb.CreateProductRequest(name="d", price=1, stock=10), metadata=md
    )
    outcomes = []
    for _ in range(20):
        for call in (
            stub.ListProducts(pb.ListProductsRequest(size=100), timeout=0.001),
            stub.GetProduct(pb.GetProductRequest(id=created.id), timeout=0.001),
            stub.UpdateStock(
                pb.UpdateStockRequest(product_id=created.id, quantity_change=1),
                metadata=md,
                timeout=0.001,
            ),
            stub.GetProduct(pb.GetProductRequest(id=str(uuid.uuid4())), timeout=0.001),
        ):
            try:
                await call
                outcomes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as exc:
                outcomes.append(exc.code())
    assert set(outcomes) <= {
        grpc.StatusCode.OK,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.NOT_FOUND,
    }, outcomes
    assert grpc.StatusCode.DEADLINE_EXCEEDED in outcomes
    final = await stub.GetProduct(pb.GetProductRequest(id=created.id))
    assert 10 <= final.stock <= 30  # each +1 committed whole or not at all
    await _still_serving(channel)
