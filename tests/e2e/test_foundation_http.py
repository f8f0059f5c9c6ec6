"""Ops endpoints and the error contract, through the real ASGI app, on both backends."""

from __future__ import annotations

import httpx
import pytest
from fastapi import Body

from arcana.api.app import create_app
from arcana.bootstrap import App


def _assert_problem(resp: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert set(body) >= {"type", "title", "status", "detail", "code"}
    assert body["status"] == status
    assert body["code"] == code
    return body  # type: ignore[no-any-return]


async def test_healthz(client: httpx.AsyncClient) -> None:
    resp = await client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


async def test_readyz_checks_database_and_redis(client: httpx.AsyncClient, container: App) -> None:
    resp = await client.get("/readyz")
    assert resp.status_code == 200
    checks = resp.json()["checks"]
    assert checks["database"] is True
    assert ("redis" in checks) == (container.redis is not None)


async def test_unknown_route_is_problem_json(client: httpx.AsyncClient) -> None:
    _assert_problem(await client.get("/api/v1/nope"), 404, "NOT_FOUND")


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    resp = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["x-request-id"] == "abc-123"
    generated = (await client.get("/healthz")).headers["x-request-id"]
    assert len(generated) == 32
    # A hostile id is replaced, not reflected.
    evil = (await client.get("/healthz", headers={"X-Request-ID": "a\tb<script>"})).headers[
        "x-request-id"
    ]
    assert evil != "a\tb<script>"


async def test_metrics_exposes_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    text = (await client.get("/metrics")).text
    assert 'arcana_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert "arcana_http_request_duration_seconds_bucket" in text


async def test_route_templates_are_the_paths_clients_send(client: httpx.AsyncClient) -> None:
    """Every area's template carries the ``/api/v1`` prefix, whether its router names the
    prefix itself or is included under it (products, events)."""
    for path in ("/api/v1/events/stream", "/api/v1/auth/me", "/api/v1/admin/jobs"):
        assert (await client.get(path)).status_code == 401
    text = (await client.get("/metrics")).text
    for template in ("/api/v1/events/stream", "/api/v1/auth/me", "/api/v1/admin/jobs"):
        assert f'{{method="GET",route="{template}",status="401"}}' in text, template


async def test_metrics_count_every_request_while_kept_label_sets_stay_bounded(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The middleware keeps the metric children of the label sets it met (the method is the
    client's to choose), up to a bound; past it, requests are still counted, nothing kept."""
    from arcana.api import middleware
    from arcana.metrics import HTTP_REQUESTS

    monkeypatch.setattr(middleware, "_ROUTE_METRICS", {})
    monkeypatch.setattr(middleware, "_ROUTE_METRICS_KEPT", 3)
    methods = [f"X{i}" for i in range(6)]

    def count(method: str) -> float:
        return HTTP_REQUESTS.labels(method, "/healthz", "405")._value.get()  # type: ignore[attr-defined,no-any-return]

    before = {m: count(m) for m in methods}
    for _ in range(2):
        for m in methods:
            assert (await client.request(m, "/healthz")).status_code == 405
    assert len(middleware._ROUTE_METRICS) == 3
    assert {m: count(m) - before[m] for m in methods} == dict.fromkeys(methods, 2)


async def test_openapi_and_docs(client: httpx.AsyncClient) -> None:
    assert (await client.get("/openapi.json")).json()["info"]["title"] == "Arcana"
    assert (await client.get("/docs")).status_code == 200


def _app_with_test_routes(container: App) -> httpx.AsyncClient:
    app = create_app(container)

    @app.post("/test/echo")
    async def echo(payload: dict[str, int] = Body(...)) -> dict[str, int]:
        return payload

    @app.get("/test/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_malformed_json_is_422_problem(container: App) -> None:
    async with _app_with_test_routes(container) as c:
        resp = await c.post(
            "/test/echo", content=b"{not json", headers={"content-type": "application/json"}
        )
        _assert_problem(resp, 422, "VALIDATION_FAILED")
        resp = await c.post("/test/echo", json={"a": "x"})
        body = _assert_problem(resp, 422, "VALIDATION_FAILED")
        assert body["errors"]


async def test_oversized_body_is_413_problem(container: App) -> None:
    async with _app_with_test_routes(container) as c:
        big = b'{"a": 1, "pad": "' + b"x" * (container.settings.http.max_body_bytes + 10) + b'"}'
        resp = await c.post("/test/echo", content=big, headers={"content-type": "application/json"})
        _assert_problem(resp, 413, "PAYLOAD_TOO_LARGE")


async def test_unexpected_error_is_500_without_internals(container: App) -> None:
    async with _app_with_test_routes(container) as c:
        resp = await c.get("/test/boom", headers={"X-Request-ID": "req-500"})
        body = _assert_problem(resp, 500, "INTERNAL")
        assert "passwd" not in resp.text
        assert "Traceback" not in resp.text
        assert resp.headers["x-request-id"] == "req-500"
        assert body["detail"] == "An unexpected error occurred"


async def test_oversized_chunked_body_is_413_problem(container: App) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"a": 1, "pad": "'
        for _ in range(20):
            yield b"x" * 100_000
        yield b'"}'

    async with _app_with_test_routes(container) as c:
        resp = await c.post(
            "/test/echo", content=chunks(), headers={"content-type": "application/json"}
        )
        _assert_problem(resp, 413, "PAYLOAD_TOO_LARGE")
