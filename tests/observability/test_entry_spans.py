"""Entry points continue an incoming W3C trace context: the HTTP span (``traceparent``
header) and the gRPC span (``traceparent`` metadata), each named by route or method."""

from __future__ import annotations

import grpc
import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from arcana.api.app import create_app
from arcana.bootstrap import App
from arcana.rpc.gen.arcana.product.v1 import product_pb2 as pb
from arcana.rpc.gen.arcana.product.v1 import product_pb2_grpc as pb_grpc
from arcana.rpc.server import GrpcServer
from tests.conftest import wait_for
from tests.observability.tracing_support import named

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_http_span_continues_the_incoming_trace(
    spans: InMemorySpanExporter, container: App
) -> None:
    app = create_app(container)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.get(
            "/api/v1/products/00000000-0000-0000-0000-000000000000",
            headers={"traceparent": TRACEPARENT},
        )
    assert r.status_code == 404
    [span] = named(spans.get_finished_spans(), "GET ")
    # Named by the route template, never by the raw path.
    assert span.name == "GET /api/v1/products/{product_id}"
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/api/v1/products/{product_id}"
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == PARENT_ID
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 404
    assert span.attributes["arcana.request_id"] == r.headers["x-request-id"]


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_grpc_span_continues_the_incoming_trace(
    spans: InMemorySpanExporter, container: App
) -> None:
    srv = GrpcServer(container, "127.0.0.1", 0)
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            stub = pb_grpc.ProductServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetProduct(
                    pb.GetProductRequest(id="00000000-0000-0000-0000-000000000000"),
                    metadata=(("traceparent", TRACEPARENT),),
                )
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await srv.stop(1)
    [span] = await wait_for(lambda: named(spans.get_finished_spans(), "grpc "))
    assert span.name == "grpc /arcana.product.v1.ProductService/GetProduct"
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == "NOT_FOUND"
