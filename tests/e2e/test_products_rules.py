"""One rule set for product input: the published OpenAPI constraints are the domain's rules,
and REST and gRPC (over a real channel) accept and refuse the same values at the same boundary,
naming the same field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import grpc
import httpx
import pytest

from arcana.api.schemas_products import DECIMAL_PLACES
from arcana.bootstrap import App
from arcana.domain.products import (
    CATEGORY,
    DESCRIPTION,
    NAME,
    PAGE,
    PRICE,
    QUANTITY_CHANGE,
    SEARCH,
    SIZE,
    STATUS_PATTERN,
    STOCK,
    STOCK_MAX,
    IntRule,
    MoneyRule,
    TextRule,
)
from arcana.rpc.gen.arcana.product.v1 import product_pb2 as pb
from arcana.rpc.gen.arcana.product.v1 import product_pb2_grpc as pb_grpc
from tests.products_support import BASE, admin_headers, grpc_stub_for

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.usefixtures("seeded_principals"),
]

Rule = TextRule | IntRule | MoneyRule

CREATE_RULES: dict[str, Rule] = {
    "name": NAME,
    "description": DESCRIPTION,
    "price": PRICE,
    "stock": STOCK,
    "category": CATEGORY,
}
UPDATE_RULES: dict[str, Rule | str] = {**CREATE_RULES, "status": STATUS_PATTERN}
STOCK_RULES: dict[str, Rule | str] = {"quantity_change": QUANTITY_CHANGE}
LIST_RULES: dict[str, Rule] = {"page": PAGE, "size": SIZE, "category": CATEGORY, "q": SEARCH}


def _value_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an optional property."""
    if "anyOf" in schema:
        [branch] = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return {**schema, **branch}
    return schema


def _assert_published(schema: dict[str, Any], rule: Rule | str, where: str) -> None:
    s = _value_schema(schema)
    if isinstance(rule, str):  # the status pattern
        assert (s["type"], s["pattern"]) == ("string", rule), where
    elif isinstance(rule, TextRule):
        assert s["type"] == "string", where
        assert s.get("minLength", 0) == rule.min_length, where
        assert s["maxLength"] == rule.max_length, where
        assert s["pattern"] == rule.pattern, where
    elif isinstance(rule, IntRule):
        assert s["type"] == "integer", where
        assert (s["minimum"], s["maximum"]) == (rule.minimum, rule.maximum), where
    else:
        assert s["type"] == "number", where
        assert Decimal(repr(s["minimum"])) == rule.minimum, where
        assert Decimal(repr(s["maximum"])) == rule.maximum, where
        assert s[DECIMAL_PLACES] == rule.places, where


def _body_schema(spec: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    body: dict[str, Any] = spec["paths"][path][method]["requestBody"]
    schema: dict[str, Any] = body["content"]["application/json"]["schema"]
    return schema


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_published_constraints_are_the_domain_rules(
    backend: str, client: httpx.AsyncClient
) -> None:
    spec = (await client.get("/openapi.json")).json()
    bodies = [
        (BASE, "post", CREATE_RULES, {"name", "price"}),
        (f"{BASE}/{{product_id}}", "patch", UPDATE_RULES, set()),
        (f"{BASE}/{{product_id}}/stock", "post", STOCK_RULES, {"quantity_change"}),
    ]
    for path, method, rules, required in bodies:
        schema = _body_schema(spec, path, method)
        properties: dict[str, Any] = schema["properties"]
        # every published property carries a rule, and every rule is published
        assert set(properties) == set(rules), (path, method)
        assert set(schema.get("required", [])) == required, (path, method)
        for field, rule in rules.items():
            _assert_published(properties[field], rule, f"{method} {path} {field}")
    parameters = {p["name"]: p["schema"] for p in spec["paths"][BASE]["get"]["parameters"]}
    for field, rule in LIST_RULES.items():
        _assert_published(parameters[field], rule, f"get {BASE} ?{field}")


# -- the same boundary on both transports ------------------------------------------------------
@pytest.fixture
async def stub(container: App) -> AsyncIterator[pb_grpc.ProductServiceStub]:
    async with grpc_stub_for(container) as stub:
        yield stub


# (field, the last accepted value, the first refused one)
BOUNDARIES: list[tuple[str, Any, Any]] = [
    ("description", "d" * DESCRIPTION.max_length, "d" * (DESCRIPTION.max_length + 1)),
    ("name", "n" * NAME.max_length, "n" * (NAME.max_length + 1)),
    ("name", "n", " \t "),
    ("name", "a-b", "a\x00b"),
    ("category", "c" * CATEGORY.max_length, "c" * (CATEGORY.max_length + 1)),
    ("price", float(PRICE.maximum), float(PRICE.maximum + Decimal("0.01"))),
    ("price", 1.01, 1.001),
    ("price", 0.0, -0.01),
    ("stock", 0, -1),
]


async def _rest(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await client.post(BASE, json={"name": "P", "price": 1, **body}, headers=headers)


async def _grpc(stub: pb_grpc.ProductServiceStub, md: Any, **fields: Any) -> tuple[Any, str]:
    """The status code and message of a create (``None`` and ``""`` when it succeeded)."""
    request = pb.CreateProductRequest(**{"name": "P", "price": 1, **fields})
    try:
        await stub.CreateProduct(request, metadata=md)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return None, ""


def _assert_refused_at(r: httpx.Response, field: str) -> None:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "VALIDATION_FAILED"
    assert [e["loc"] for e in body["errors"]] == [["body", field]]
    assert body["detail"].startswith(f"{field}: ")


@pytest.mark.parametrize(("field", "accepted", "refused"), BOUNDARIES)
async def test_create_refuses_the_same_values_over_rest_and_grpc(
    client: httpx.AsyncClient,
    container: App,
    stub: pb_grpc.ProductServiceStub,
    field: str,
    accepted: Any,
    refused: Any,
) -> None:
    headers = admin_headers(container)
    md = (("authorization", headers["Authorization"]),)
    r = await _rest(client, headers, **{field: accepted})
    assert r.status_code == 201, r.text
    assert await _grpc(stub, md, **{field: accepted}) == (None, "")
    _assert_refused_at(await _rest(client, headers, **{field: refused}), field)
    code, message = await _grpc(stub, md, **{field: refused})
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith(f"VALIDATION_FAILED: {field}: "), message


async def test_update_and_stock_refuse_the_same_values_over_rest_and_grpc(
    client: httpx.AsyncClient, container: App, stub: pb_grpc.ProductServiceStub
) -> None:
    headers = admin_headers(container)
    md = (("authorization", headers["Authorization"]),)
    pid = (await _rest(client, headers, stock=1)).json()["id"]
    url = f"{BASE}/{pid}"
    longest, too_long = "d" * DESCRIPTION.max_length, "d" * (DESCRIPTION.max_length + 1)

    assert (await client.patch(url, json={"description": longest}, headers=headers)).is_success
    await stub.UpdateProduct(pb.UpdateProductRequest(id=pid, description=longest), metadata=md)
    r = await client.patch(url, json={"description": too_long}, headers=headers)
    _assert_refused_at(r, "description")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.UpdateProduct(pb.UpdateProductRequest(id=pid, description=too_long), metadata=md)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "description: " in (info.value.details() or "")

    # stock 1 + (STOCK_MAX - 1) is the largest stock there is; one more is refused
    r = await client.post(f"{url}/stock", json={"quantity_change": STOCK_MAX}, headers=headers)
    _assert_refused_at(r, "quantity_change")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.UpdateStock(
            pb.UpdateStockRequest(product_id=pid, quantity_change=STOCK_MAX), metadata=md
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "quantity_change: " in (info.value.details() or "")
    r = await client.post(f"{url}/stock", json={"quantity_change": STOCK_MAX - 1}, headers=headers)
    assert r.json()["stock"] == STOCK_MAX


async def test_a_bad_id_is_located_in_the_path(client: httpx.AsyncClient, container: App) -> None:
    r = await client.patch(f"{BASE}/nope", json={"name": "x"}, headers=admin_headers(container))
    assert r.status_code == 422
    assert [e["loc"] for e in r.json()["errors"]] == [["path", "product_id"]]
