"""Hostile input: every case answers a clear 4xx problem, never a 500.

Transport-level abuse (oversized and chunked bodies, deeply nested JSON, invalid UTF-8) goes to
a real ``arcana serve`` over a socket; data-level abuse (NUL bytes, SQL-looking and confusable
emails, 10 000-character names, huge page numbers) runs through the app on both backends, since
PostgreSQL and SQLite disagree about what a string may hold.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import httpx
import pytest

from arcana.bootstrap import App
from tests.auth_support import PASSWORD, bearer, user_token
from tests.reliability.support import EmbeddedServer, is_problem

pytestmark = pytest.mark.reliability

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
PRODUCTS = "/api/v1/products"


def _problem(resp: httpx.Response, *statuses: int) -> None:
    assert resp.status_code in statuses, (resp.status_code, resp.text[:500])
    assert is_problem(resp), resp.text[:500]


# -- transport level, real server ---------------------------------------------------------------
@pytest.fixture
def http(embedded_server: EmbeddedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=embedded_server.base_url, timeout=30) as c:
        yield c


@pytest.fixture
def admin(embedded_server: EmbeddedServer) -> dict[str, str]:
    return bearer(embedded_server.admin_token)


@pytest.mark.parametrize("path", [REGISTER, LOGIN, PRODUCTS])
def test_oversized_body_is_413(http: httpx.Client, admin: dict[str, str], path: str) -> None:
    body = b'{"name": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    resp = http.post(path, content=body, headers={**admin, "content-type": "application/json"})
    _problem(resp, 413)
    assert resp.json()["code"] == "PAYLOAD_TOO_LARGE"


def test_oversized_chunked_body_is_413(http: httpx.Client, admin: dict[str, str]) -> None:
    """No Content-Length: the limit is enforced while the body arrives."""

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    resp = http.post(
        PRODUCTS, content=chunks(), headers={**admin, "content-type": "application/json"}
    )
    _problem(resp, 413)


def test_lying_content_length_header(embedded_server: EmbeddedServer) -> None:
    """A Content-Length that is not a number is refused by the HTTP parser, not by a 500."""
    raw = (
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 12abc\r\n\r\n{}"
    )
    with socket.create_connection(("127.0.0.1", embedded_server.port), timeout=10) as s:
        s.sendall(raw)
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 4"), head[:200]


@pytest.mark.parametrize("opener", ["[", '{"a":'])
@pytest.mark.parametrize("path", [REGISTER, LOGIN, PRODUCTS, "/api/v1/admin/jobs"])
def test_deeply_nested_json(
    http: httpx.Client, admin: dict[str, str], path: str, opener: str
) -> None:
    body = (opener * 100_000).encode()
    resp = http.post(path, content=body, headers={**admin, "content-type": "application/json"})
    _problem(resp, 400, 422)


@pytest.mark.parametrize("path", [REGISTER, LOGIN, PRODUCTS, "/api/v1/admin/jobs"])
def test_deeply_nested_but_complete_json(
    http: httpx.Client, admin: dict[str, str], path: str
) -> None:
    depth = 50_000
    body = b'{"name": ' + b"[" * depth + b"]" * depth + b"}"
    resp = http.post(path, content=body, headers={**admin, "content-type": "application/json"})
    _problem(resp, 400, 422)


@pytest.mark.parametrize("path", [REGISTER, LOGIN, PRODUCTS])
def test_invalid_utf8(http: httpx.Client, admin: dict[str, str], path: str) -> None:
    body = b'{"name": "\xff\xfe\xc3\x28", "email": "a\xc0@example.com", "password": "x"}'
    resp = http.post(path, content=body, headers={**admin, "content-type": "application/json"})
    _problem(resp, 400, 422)


def test_invalid_utf8_in_path_and_query(http: httpx.Client) -> None:
    resp = http.get("/api/v1/products/%ff%fe")
    _problem(resp, 404, 422)
    resp = http.get("/api/v1/products?category=%ff%fe%00")
    _problem(resp, 400, 422) if resp.status_code >= 400 else None
    assert resp.status_code < 500


def test_wrong_content_type_and_empty_body(http: httpx.Client, admin: dict[str, str]) -> None:
    for headers in ({"content-type": "text/plain"}, {"content-type": "application/xml"}, {}):
        resp = http.post(REGISTER, content=b"<a/>", headers=headers)
        _problem(resp, 400, 415, 422)
    resp = http.post(PRODUCTS, content=b"", headers={**admin, "content-type": "application/json"})
    _problem(resp, 422)


# -- data level, both backends ------------------------------------------------------------------
SQLISH_EMAILS = [
    "' OR 1=1 --@example.com",
    "admin'--@example.com",
    "x@example.com'; DROP TABLE users; --",
    'robert"); DELETE FROM users; --@x.io',
    "a@b.c\x00' OR ''='",
]
CONFUSABLE_EMAILS = [
    "\u0430dmin@example.com",  # Cyrillic a
    "admin@ex\u0430mple.com",  # Cyrillic a in the domain
    "ad\u200bmin@example.com",  # zero-width space
    "admin@example.com\u202e",  # right-to-left override
    "\uff21\uff24\uff2d\uff29\uff2e@example.com",  # fullwidth
    "admin\u0301@example.com",  # combining accent
]


async def test_sql_looking_and_confusable_emails(client: httpx.AsyncClient) -> None:
    await client.post(
        REGISTER, json={"name": "Admin", "email": "admin@example.com", "password": PASSWORD}
    )
    for email in SQLISH_EMAILS + CONFUSABLE_EMAILS:
        reg = await client.post(
            REGISTER, json={"name": "Mallory", "email": email, "password": PASSWORD}
        )
        assert reg.status_code in (201, 409, 422), (email, reg.status_code, reg.text)
        if reg.status_code != 201:
            assert is_problem(reg), reg.text
        else:
            # An accepted address is its own account, never an alias of admin@example.com.
            assert reg.json()["email"] != "admin@example.com"
        log_in = await client.post(LOGIN, json={"email": email, "password": PASSWORD})
        assert log_in.status_code in (200, 401, 422), (email, log_in.status_code, log_in.text)
        if log_in.status_code == 200:
            assert reg.status_code == 201, email
        else:
            assert is_problem(log_in)
        forgot = await client.post("/api/v1/auth/forgot-password", json={"email": email})
        assert forgot.status_code in (202, 422), (email, forgot.text)


@pytest.mark.parametrize(
    "field",
    ["name", "email", "password"],
)
async def test_ten_thousand_character_strings(client: httpx.AsyncClient, field: str) -> None:
    body = {"name": "Ada", "email": f"u-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}
    body[field] = ("A" * 9_990 + "@example.com") if field == "email" else "Aa1" + "x" * 9_997
    resp = await client.post(REGISTER, json=body)
    _problem(resp, 422)


async def test_long_product_fields(client: httpx.AsyncClient, container: App) -> None:
    _, token = await user_token(container, admin=True)
    for field in ("name", "category", "description"):
        body: dict[str, object] = {"name": "Lamp", "price": 10}
        body[field] = "x" * 10_000 if field != "description" else "x" * 1_000_000
        resp = await client.post(PRODUCTS, json=body, headers=bearer(token))
        assert resp.status_code in (201, 413, 422), (field, resp.status_code, resp.text[:300])
        if resp.status_code != 201:
            assert is_problem(resp)


NUL_CASES = [
    (REGISTER, {"name": "Ada\x00", "email": "nul-{}@example.com", "password": PASSWORD}),
    (REGISTER, {"name": "Ada", "email": "nul\x00-{}@example.com", "password": PASSWORD}),
    (REGISTER, {"name": "Ada", "email": "nul-{}@example.com", "password": "Aa1\x00aaaaaa"}),
    (LOGIN, {"email": "nul\x00-{}@example.com", "password": PASSWORD}),
    ("/api/v1/auth/refresh", {"refresh_token": "abc\x00def-{}"}),
    ("/api/v1/auth/logout", {"refresh_token": "abc\x00def-{}"}),
    ("/api/v1/auth/reset-password", {"token": "abc\x00-{}", "new_password": PASSWORD}),
    ("/api/v1/auth/forgot-password", {"email": "nul\x00-{}@example.com"}),
]


@pytest.mark.parametrize(("path", "template"), NUL_CASES)
async def test_nul_bytes_in_strings(
    client: httpx.AsyncClient, path: str, template: dict[str, str]
) -> None:
    tag = uuid.uuid4().hex[:8]
    body = {k: v.replace("{}", tag) for k, v in template.items()}
    resp = await client.post(path, json=body)
    assert resp.status_code < 500, (path, resp.status_code, resp.text)
    if resp.status_code >= 400:
        assert is_problem(resp)


async def test_nul_bytes_in_product_fields(client: httpx.AsyncClient, container: App) -> None:
    _, token = await user_token(container, admin=True)
    for field in ("name", "description", "category"):
        body: dict[str, object] = {"name": "Lamp", "price": 10, field: "bad\x00value"}
        resp = await client.post(PRODUCTS, json=body, headers=bearer(token))
        _problem(resp, 422)
    created = await client.post(PRODUCTS, json={"name": "Lamp", "price": 1}, headers=bearer(token))
    assert created.status_code == 201
    pid = created.json()["id"]
    resp = await client.patch(f"{PRODUCTS}/{pid}", json={"category": "\x00"}, headers=bearer(token))
    _problem(resp, 422)
    resp = await client.get(PRODUCTS, params={"category": "a\x00b"})
    assert resp.status_code in (200, 422), resp.text
    resp = await client.get(f"{PRODUCTS}/abc%00def")
    _problem(resp, 404, 422)


@pytest.mark.parametrize(
    "params",
    [
        {"page": "99999999999999999999999"},
        {"page": str(2**63)},
        {"page": "10000000"},
        {"page": "-1"},
        {"size": "100000000000"},
        {"size": "0"},
        {"page": "1e9"},
        {"page": "NaN"},
        {"size": "\uff11\uff10"},  # fullwidth digits
    ],
)
async def test_huge_page_numbers(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    resp = await client.get(PRODUCTS, params=params)
    assert resp.status_code in (200, 422), (params, resp.status_code, resp.text)
    if resp.status_code == 200:
        assert resp.json()["data"] == []
    else:
        assert is_problem(resp)


async def test_huge_admin_list_pages(client: httpx.AsyncClient, container: App) -> None:
    _, token = await user_token(container, admin=True)
    for path in ("/api/v1/admin/jobs", "/api/v1/admin/audit"):
        for params in ({"page": "99999999999999999999"}, {"page": "10000000", "size": "100"}):
            resp = await client.get(path, params=params, headers=bearer(token))
            assert resp.status_code in (200, 422), (path, params, resp.status_code, resp.text)
            if resp.status_code != 200:
                assert is_problem(resp)


async def test_huge_and_odd_numbers_in_bodies(client: httpx.AsyncClient, container: App) -> None:
    _, token = await user_token(container, admin=True)
    for price in (10**400, 1e308, -0.0, 1e-300, 12.345):
        resp = await client.post(
            PRODUCTS,
            content=f'{{"name": "X", "price": {price}}}'.encode(),
            headers={**bearer(token), "content-type": "application/json"},
        )
        assert resp.status_code in (201, 422), (price, resp.status_code, resp.text)
    created = await client.post(PRODUCTS, json={"name": "Y", "price": 1}, headers=bearer(token))
    pid = created.json()["id"]
    for change in (2**63, -(2**63), 2**31, 10**30):
        resp = await client.post(
            f"{PRODUCTS}/{pid}/stock", json={"quantity_change": change}, headers=bearer(token)
        )
        assert resp.status_code in (200, 422), (change, resp.status_code, resp.text)
        if resp.status_code != 200:
            assert is_problem(resp)
    final = await client.get(f"{PRODUCTS}/{pid}")
    assert final.json()["stock"] >= 0
