"""``LoginFastPath`` (``arcana.api.auth``) answers a login exactly as the FastAPI route does.

A body sent with ``Content-Length`` takes the fast path; the same body sent chunked (no length)
is declined by it and answered by the route. Both are compared on every outcome a login has."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from arcana.api.app import create_app
from arcana.bootstrap import App
from tests.app_support import post_past_the_body_limit
from tests.auth_support import PASSWORD, create_user

LOGIN = "/api/v1/auth/login"
# Headers that differ between any two answers, whichever path gave them.
VOLATILE_HEADERS = {"x-request-id", "content-length", "date", "set-cookie"}


async def _chunked(raw: bytes) -> AsyncIterator[bytes]:
    yield raw


async def _post(
    client: httpx.AsyncClient, raw: bytes, headers: dict[str, str], *, fast: bool
) -> httpx.Response:
    return await client.post(
        LOGIN,
        content=raw if fast else _chunked(raw),
        headers={"content-type": "application/json", **headers},
    )


def _same_answer(a: httpx.Response, b: httpx.Response) -> None:
    assert a.status_code == b.status_code, (a.text, b.text)
    kept = [(k, v) for k, v in a.headers.multi_items() if k not in VOLATILE_HEADERS]
    assert kept == [(k, v) for k, v in b.headers.multi_items() if k not in VOLATILE_HEADERS]
    ja, jb = a.json(), b.json()
    if a.status_code == 200:
        assert list(ja) == list(jb) == ["access_token", "refresh_token", "token_type", "expires_in"]
        for secret in ("access_token", "refresh_token"):
            assert ja.pop(secret) != jb.pop(secret)
        # Byte for byte but for the secrets: the same encoder output.
        assert a.content.split(b'"token_type"')[1] == b.content.split(b'"token_type"')[1]
    assert ja == jb


async def test_login_fast_path_answers_as_the_route(
    client: httpx.AsyncClient, container: App
) -> None:
    fast_user = await create_user(container)
    routed_user = await create_user(container)

    async def both(body: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> None:
        answers = []
        for fast, user in ((True, fast_user), (False, routed_user)):
            if isinstance(body, dict):
                raw = httpx_json({**body, "email": body["email"].format(user.email)})
            else:
                raw = body
            answers.append(await _post(client, raw, headers or {}, fast=fast))
        _same_answer(*answers)

    ok = {"email": "{}", "password": PASSWORD}
    await both(ok)
    await both(ok, {"user-agent": "Test/1"})
    await both({"email": "  {}  ", "password": PASSWORD})  # the email rules' normalisation
    await both({**ok, "extra": 1})
    await both({"email": "{}", "password": "Wrong-Passw0rd"})
    await both({"email": "nobody-{}", "password": PASSWORD})  # unknown: the same 401
    for raw in (
        b"{}",
        b"[1]",
        b"not json",
        b'{"email": "not-an-email", "password": "x"}',
        b'{"email": "a@example.com"}',
        b'{"email": "a@example.com", "password": ""}',
        b'{"email": "a@example.com", "password": 12345678}',
        b'{"email": null, "password": "x"}',
        b'{"email": "a@example.com", "password": "' + b"x" * 1025 + b'"}',
        b'{"email": "Ada <a@example.com>", "password": "x"}',
    ):
        await both(raw)
    # Failures count on both paths alike, up to the account limit's 429 with Retry-After.
    for _ in range(10):
        await both({"email": "{}", "password": "Wrong-Passw0rd"})
    await both(ok)
    fast_locked = await _post(client, httpx_json({**ok, "email": fast_user.email}), {}, fast=True)
    assert fast_locked.status_code == 429
    assert "retry-after" in fast_locked.headers


async def test_login_fast_path_tokens_work(client: httpx.AsyncClient, container: App) -> None:
    """The fast path's token pair is a real one: the access token reads ``/me``, the refresh
    token rotates, and the session carries the client's address and user agent."""
    user = await create_user(container)
    r = await _post(
        client,
        httpx_json({"email": user.email, "password": PASSWORD}),
        {"user-agent": "Fast/2"},
        fast=True,
    )
    assert r.status_code == 200, r.text
    tokens = r.json()
    me = await client.get(
        "/api/v1/auth/me", headers={"authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.json()["id"] == user.id
    sessions = await client.get(
        "/api/v1/auth/sessions", headers={"authorization": f"Bearer {tokens['access_token']}"}
    )
    [session] = sessions.json()["data"]
    assert (session["user_agent"], session["ip"]) == ("Fast/2", "127.0.0.1")
    rotated = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert rotated.status_code == 200, rotated.text


async def test_login_fast_path_skips_fastapi_and_leaves_browsers_to_the_route(
    container: App,
) -> None:
    """With the route's services dependency broken, a plain login still succeeds (the fast
    path answered it), while a browser login, which also sets the cookie, reaches the route."""
    from arcana.api.deps import get_services

    user = await create_user(container)
    app = create_app(container)

    async def broken() -> None:
        raise RuntimeError("the route ran")

    app.dependency_overrides[get_services] = broken
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    body = {"email": user.email, "password": PASSWORD}
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as own:
        plain = await own.post(LOGIN, json=body)
        browser = await own.post(LOGIN, json=body, headers={"X-Arcana-Client": "browser"})
    assert plain.status_code == 200, plain.text
    assert "set-cookie" not in plain.headers
    assert browser.status_code == 500


async def test_browser_login_sets_the_cookie(client: httpx.AsyncClient, container: App) -> None:
    user = await create_user(container)
    r = await client.post(
        LOGIN,
        json={"email": user.email, "password": PASSWORD},
        headers={"X-Arcana-Client": "browser"},
    )
    assert r.status_code == 200, r.text
    assert r.cookies.get("arcana_refresh") == r.json()["refresh_token"]


def httpx_json(body: dict[str, Any]) -> bytes:
    """The body as ``httpx``'s ``json=`` would send it."""
    return httpx.Request("POST", "http://x", json=body).content


async def test_login_fast_path_body_over_the_limit_is_413(container: App) -> None:
    """A body longer than its ``Content-Length`` said, past the body limit: 413 problem, as on
    every route, not a 500 (the limit trips inside the fast path's read)."""
    sent = await post_past_the_body_limit(
        create_app(container), LOGIN, [(b"content-type", b"application/json")]
    )
    assert sent[0]["status"] == 413
    assert b"PAYLOAD_TOO_LARGE" in sent[1]["body"]
