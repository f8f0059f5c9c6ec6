"""One registration is one trace: HTTP request -> outbox -> relay (stream or in-process
dispatch) -> event handler -> ``email.welcome`` job -> mail, on both backends."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from arcana.bootstrap import App
from arcana.lifecycle import Lifecycle
from tests.auth_support import PASSWORD, register_and_login
from tests.conftest import insert_principals, wait_for
from tests.observability.tracing_support import everything_recorded, named, trace_of
from tests.products_support import BASE, admin_headers, create_product

AUTH = "/api/v1/auth"


@pytest.fixture
async def running(spans: InMemorySpanExporter, process: Lifecycle) -> App:
    process.start_api_loops()
    process.start_worker_loops()
    return process.app


@pytest.fixture
async def traced_client(running: App) -> httpx.AsyncClient:
    from arcana.api.app import create_app

    app = create_app(running)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_registration_is_one_trace_from_request_to_mail(
    spans: InMemorySpanExporter, traced_client: httpx.AsyncClient, running: App
) -> None:
    async with traced_client as client:
        await register_and_login(client)
    mail = await wait_for(lambda: named(spans.get_finished_spans(), "mail.send welcome"), 20)
    trace = trace_of(spans.get_finished_spans(), mail[0].context.trace_id)
    names = {s.name for s in trace}
    assert "POST /api/v1/auth/register" in names, names
    delivery = "outbox.dispatch" if running.events.embedded else "outbox.publish"
    assert f"{delivery} auth.user_registered" in names, names
    assert "event.handle auth.user_registered" in names, names
    assert "job.run email.welcome" in names, names
    assert "argon2.hash" in names, names
    assert any(n.startswith("sql ") for n in names), names
    # Parent chain: mail <- job <- handler <- ... <- the HTTP request (the trace's root).
    by_id = {s.context.span_id: s for s in trace}
    chain, current = [], mail[0]
    while current.parent is not None and current.parent.span_id in by_id:
        current = by_id[current.parent.span_id]
        chain.append(current.name)
    assert chain[-1] == "POST /api/v1/auth/register", chain
    assert "job.run email.welcome" in chain
    assert "event.handle auth.user_registered" in chain
    http = named(trace, "POST /api/v1/auth/register")[0]
    assert http.attributes is not None
    assert http.attributes["http.route"] == "/api/v1/auth/register"
    assert http.attributes["http.response.status_code"] == 201
    job = named(trace, "job.run email.welcome")[0]
    assert job.attributes is not None
    assert job.attributes["arcana.job.attempt"] == 1
    assert job.attributes["arcana.job.queue_wait_seconds"] >= 0
    # The job keeps its trace context beside it: not in its payload, not in the API view.
    stored = await running.queue.get(str(job.attributes["arcana.job.id"]))
    assert stored is not None
    assert stored.trace_context is not None
    assert stored.trace_context.split("-")[1] == f"{mail[0].context.trace_id:032x}"
    assert set(stored.payload) == {"user_id", "email", "name"}
    assert "trace" not in json.dumps(stored.to_dict())
    # The relay's batch span is its own trace, linked to the trace of each row it carried.
    relays = named(spans.get_finished_spans(), "outbox.relay")
    assert any(
        link.context.trace_id == mail[0].context.trace_id for r in relays for link in r.links
    )
    if not running.events.embedded:
        assert any(n.startswith("redis ") for n in {s.name for s in spans.get_finished_spans()})
        # The stream entry: `event` is the envelope alone, the trace rides beside it.
        assert running.redis is not None
        [(_eid, fields)] = await running.redis.xrange(running.events.stream)
        assert set(fields) == {b"event", b"traceparent"}
        assert set(json.loads(fields[b"event"])) == {
            "id", "event_type", "data", "timestamp", "source"
        }  # fmt: skip
        assert fields[b"traceparent"].decode().split("-")[1] == f"{http.context.trace_id:032x}"


async def test_no_password_or_token_reaches_a_span(
    spans: InMemorySpanExporter, traced_client: httpx.AsyncClient, running: App
) -> None:
    secrets: list[str] = [PASSWORD]
    async with traced_client as client:
        u = await register_and_login(client)
        secrets += [u["access_token"], u["refresh_token"]]
        r = await client.post(f"{AUTH}/forgot-password", json={"email": u["email"]})
        assert r.status_code == 202

        def reset_mail() -> list[str]:
            folder = running.settings.var_dir / "mail"
            return [
                m.group(1)
                for f in folder.glob("*.eml")
                for m in [re.search(r"Reset token: (\S+)", f.read_text())]
                if m
            ]

        [token] = await wait_for(reset_mail, 20)
        secrets.append(token)
        new_password = "Brand-New-Pass-7"
        r = await client.post(
            f"{AUTH}/reset-password", json={"token": token, "new_password": new_password}
        )
        assert r.status_code == 204, r.text
        secrets.append(new_password)
        r = await client.post(f"{AUTH}/login", json={"email": u["email"], "password": "Wrong-1"})
        assert r.status_code == 401
        secrets.append("Wrong-1")
    await wait_for(lambda: named(spans.get_finished_spans(), "mail.send password_reset"), 20)
    recorded = everything_recorded(spans.get_finished_spans())
    assert "POST /api/v1/auth/reset-password" in recorded
    for secret in secrets:
        assert secret not in recorded


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_sampled_stock_change_records_its_one_statement(
    spans: InMemorySpanExporter, traced_client: httpx.AsyncClient, running: App
) -> None:
    """The one-statement stock change runs on the driver directly, below SQLAlchemy's hooks;
    in a sampled trace it must still show as the request's SQL span."""
    await insert_principals(running)
    async with traced_client as client:
        product = await create_product(client, running, stock=100)
        r = await client.post(
            f"{BASE}/{product['id']}/stock",
            json={"quantity_change": 1},
            headers=admin_headers(running),
        )
        assert r.status_code == 200, r.text
        assert r.json()["stock"] == 101
    [http] = named(spans.get_finished_spans(), "POST /api/v1/products/{product_id}/stock")
    trace = trace_of(spans.get_finished_spans(), http.context.trace_id)
    statements = [str((s.attributes or {}).get("db.query.text", "")) for s in trace]
    assert any(t.startswith("WITH changed AS") for t in statements), statements
