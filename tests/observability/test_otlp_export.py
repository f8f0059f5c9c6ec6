"""The OTLP/HTTP exporter end to end: ``ARCANA_OTEL_ENDPOINT`` pointed at a receiver started
here (a small HTTP server decoding ``ExportTraceServiceRequest`` protobufs) gets the whole
registration trace."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from arcana import tracing
from arcana.api.app import create_app
from arcana.bootstrap import App
from arcana.lifecycle import Lifecycle
from tests.auth_support import PASSWORD, register_and_login
from tests.conftest import wait_for


@dataclass
class Received:
    paths: list[str] = field(default_factory=list)
    spans: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    services: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def names_in(self, trace_id: bytes) -> set[str]:
        with self.lock:
            return {name for name, tid, _a in self.spans if tid == trace_id}

    def find(self, name: str) -> list[tuple[str, bytes, dict[str, str]]]:
        with self.lock:
            return [s for s in self.spans if s[0] == name]


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    got = Received()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = ExportTraceServiceRequest.FromString(body)
            with got.lock:
                got.paths.append(self.path)
                for rs in request.resource_spans:
                    for attr in rs.resource.attributes:
                        if attr.key == "service.name":
                            got.services.add(attr.value.string_value)
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            attrs = {a.key: str(a.value) for a in s.attributes}
                            got.spans.append((s.name, s.trace_id, attrs))
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", got
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def otlp(receiver: tuple[str, Received]) -> Iterator[Received]:
    endpoint, got = receiver
    assert tracing.configure_tracing(endpoint, service_name="arcana-test", batch=False)
    try:
        yield got
    finally:
        tracing.shutdown_tracing()


async def test_registration_trace_reaches_an_otlp_receiver(
    otlp: Received, process: Lifecycle, container: App
) -> None:
    process.start_api_loops()
    process.start_worker_loops()
    app = create_app(container)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        u = await register_and_login(client)
    [mail] = await wait_for(lambda: otlp.find("mail.send welcome"), 20)
    names = otlp.names_in(mail[1])
    for expected in (
        "POST /api/v1/auth/register",
        "event.handle auth.user_registered",
        "job.run email.welcome",
    ):
        assert expected in names, names
    assert set(otlp.paths) == {"/v1/traces"}
    assert otlp.services == {"arcana-test"}
    recorded = repr(otlp.spans)
    for secret in (PASSWORD, u["access_token"], u["refresh_token"]):
        assert secret not in recorded


def test_tracing_is_off_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.endpoint_from_env(None) is None
    assert tracing.configure_tracing(None) is False
    assert not tracing.ENABLED
    assert tracing.current_traceparent() is None
    with tracing.span("anything", {"a": 1}) as current:
        assert current is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert tracing.endpoint_from_env(None) == "http://collector:4318"
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.endpoint_from_env("http://x:4318") is None


def test_cli_start_up_does_not_load_the_tracing_sdk() -> None:
    # Only our tracing SDK parts are checked: redis-py itself may load the metrics SDK.
    code = (
        "import sys, arcana.cli, arcana.cli.serve, arcana.cli.worker;"
        "print(any(m.startswith(('opentelemetry.sdk.trace', 'opentelemetry.exporter'))"
        " for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_sampler_comes_from_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.01")
    assert tracing.configure_tracing(None, exporter=InMemorySpanExporter(), batch=False)
    try:
        provider = tracing._provider
        assert provider is not None
        assert "TraceIdRatioBased{0.01}" in provider.sampler.get_description()
    finally:
        tracing.shutdown_tracing()


@pytest.mark.parametrize(
    ("configured", "url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("http://collector:4318/v1/traces", "http://collector:4318/v1/traces"),
    ],
)
def test_arcana_endpoint_is_a_collector_url(configured: str, url: str) -> None:
    assert tracing._traces_url(configured, configured) == url
