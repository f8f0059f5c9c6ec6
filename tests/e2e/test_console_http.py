"""What the admin console relies on, over HTTP on both backends: the browser-session refresh
cookie (contract §2), the admin user routes, the overview and schedule, product name search
and the console's own pages and headers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest

from arcana.api.app import create_app
from arcana.bootstrap import App
from tests.auth_support import PASSWORD, bearer, create_user, login, register_and_login, user_token

AUTH = "/api/v1/auth"
USERS = "/api/v1/admin/users"
BROWSER = {"X-Arcana-Client": "browser"}


def _cookie_header(response: httpx.Response) -> str:
    cookies = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    assert len(cookies) == 1, cookies
    return cookies[0]


# -- browser sessions ------------------------------------------------------------------------
async def test_a_browser_login_sets_an_httponly_strict_cookie_scoped_to_auth(
    client: httpx.AsyncClient, container: App
) -> None:
    user = await register_and_login(client)
    r = await client.post(
        f"{AUTH}/login", json={"email": user["email"], "password": PASSWORD}, headers=BROWSER
    )
    assert r.status_code == 200
    cookie = _cookie_header(r).lower()
    assert cookie.startswith(f"arcana_refresh={r.json()['refresh_token']}".lower())
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/api/v1/auth" in cookie
    assert f"max-age={container.settings.auth.refresh_token_ttl}" in cookie
    assert "secure" not in cookie  # plain HTTP here; see the HTTPS test


async def test_the_cookie_is_secure_over_https(container: App) -> None:
    transport = httpx.ASGITransport(app=create_app(container))
    async with httpx.AsyncClient(transport=transport, base_url="https://test") as https:
        user = await register_and_login(https)
        r = await https.post(
            f"{AUTH}/login", json={"email": user["email"], "password": PASSWORD}, headers=BROWSER
        )
    assert "secure" in _cookie_header(r).lower()


async def test_bearer_clients_see_no_cookie(client: httpx.AsyncClient) -> None:
    user = await register_and_login(client)
    assert (
        "set-cookie"
        not in (
            await client.post(f"{AUTH}/login", json={"email": user["email"], "password": PASSWORD})
        ).headers
    )
    r = await client.post(f"{AUTH}/refresh", json={"refresh_token": user["refresh_token"]})
    assert r.status_code == 200
    assert "set-cookie" not in r.headers
    # A missing body is still a validation error for them.
    r = await client.post(f"{AUTH}/refresh")
    assert r.status_code == 422
    assert r.json()["code"] == "VALIDATION_FAILED"
    r = await client.post(f"{AUTH}/logout")
    assert r.status_code == 422


async def test_the_cookie_refreshes_only_with_the_browser_header(client: httpx.AsyncClient) -> None:
    user = await register_and_login(client)
    await login(client, user["email"], headers=BROWSER)
    first = client.cookies.get("arcana_refresh", path="/api/v1/auth")
    assert first

    r = await client.post(f"{AUTH}/refresh")
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "FORBIDDEN"
    # A form post (what a cross-site page can send) is refused the same way.
    r = await client.post(f"{AUTH}/logout", data={"refresh_token": "x"})
    assert r.status_code in {403, 422}

    r = await client.post(f"{AUTH}/refresh", headers=BROWSER)
    assert r.status_code == 200, r.text
    second = client.cookies.get("arcana_refresh", path="/api/v1/auth")
    assert second == r.json()["refresh_token"] != first
    me = await client.get(f"{AUTH}/me", headers=bearer(r.json()["access_token"]))
    assert me.status_code == 200

    # The rotated-away token is reuse: the family dies (strict reuse detection applies).
    r = await client.post(f"{AUTH}/refresh", json={"refresh_token": first}, headers=BROWSER)
    assert r.status_code == 401
    r = await client.post(f"{AUTH}/refresh", headers=BROWSER)
    assert r.status_code == 401


async def test_a_browser_logout_ends_the_session_and_clears_the_cookie(
    client: httpx.AsyncClient,
) -> None:
    user = await register_and_login(client)
    tokens = await login(client, user["email"], headers=BROWSER)
    r = await client.post(f"{AUTH}/logout", headers=BROWSER)
    assert r.status_code == 204
    cleared = _cookie_header(r).lower()
    assert cleared.startswith('arcana_refresh=""') or cleared.startswith("arcana_refresh=;")
    assert "max-age=0" in cleared
    assert "path=/api/v1/auth" in cleared
    assert client.cookies.get("arcana_refresh", path="/api/v1/auth") is None
    r = await client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 401
    # Without a cookie a browser refresh is an expired session, a browser logout still 204.
    r = await client.post(f"{AUTH}/refresh", headers=BROWSER)
    assert r.status_code == 401
    assert r.json()["code"] == "TOKEN_EXPIRED"
    assert (await client.post(f"{AUTH}/logout", headers=BROWSER)).status_code == 204


# -- admin users -----------------------------------------------------------------------------
async def test_admin_user_routes_need_an_admin(client: httpx.AsyncClient, container: App) -> None:
    assert (await client.get(USERS)).status_code == 401
    _, token = await user_token(container)
    r = await client.get(USERS, headers=bearer(token))
    assert r.status_code == 403
    assert r.json()["code"] == "FORBIDDEN"


async def test_admins_search_users_and_change_roles(
    client: httpx.AsyncClient, container: App
) -> None:
    admin, token = await user_token(container, admin=True)
    headers = bearer(token)
    tag = uuid.uuid4().hex[:8]
    target = await create_user(container, email=f"grace-{tag}@example.com", name="Grace Hopper")
    await create_user(container)

    r = await client.get(USERS, params={"q": f"GRACE-{tag}"}, headers=headers)
    assert r.status_code == 200
    page = r.json()
    assert page["total"] == 1
    assert [u["email"] for u in page["data"]] == [target.email]
    assert set(page["data"][0]) == {"id", "name", "email", "roles", "created_at", "updated_at"}
    r = await client.get(USERS, params={"q": "hopper"}, headers=headers)
    assert target.id in [u["id"] for u in r.json()["data"]]
    r = await client.get(USERS, params={"q": "%"}, headers=headers)  # a literal, not a wildcard
    assert r.json()["total"] == 0
    r = await client.get(USERS, params={"size": 1}, headers=headers)
    assert r.json()["total"] >= 3
    assert len(r.json()["data"]) == 1

    r = await client.put(f"{USERS}/{target.id}/roles/admin", headers=headers)
    assert r.status_code == 200
    assert r.json()["roles"] == ["admin", "user"]
    r = await client.delete(f"{USERS}/{target.id}/roles/admin", headers=headers)
    assert r.json()["roles"] == ["user"]
    assert (await client.put(f"{USERS}/{target.id}/roles/root", headers=headers)).status_code == 422

    r = await client.delete(f"{USERS}/{admin.id}/roles/admin", headers=headers)
    assert r.status_code == 409
    assert (await client.delete(f"{USERS}/{admin.id}", headers=headers)).status_code == 409
    assert (await client.get(f"{USERS}/{uuid.uuid4()}", headers=headers)).status_code == 404
    assert (await client.get(f"{USERS}/not-a-uuid", headers=headers)).status_code == 422


async def test_admins_list_and_end_a_users_sessions_and_delete_the_user(
    client: httpx.AsyncClient, container: App
) -> None:
    _, token = await user_token(container, admin=True)
    headers = bearer(token)
    user = await register_and_login(client)
    second = await login(client, user["email"])

    r = await client.get(f"{USERS}/{user['id']}/sessions", headers=headers)
    assert r.status_code == 200
    sessions = r.json()["data"]
    assert len(sessions) == 2
    assert not any(s["current"] for s in sessions)

    ended = next(
        s["id"]
        for s in (
            await client.get(f"{AUTH}/sessions", headers=bearer(second["access_token"]))
        ).json()["data"]
        if s["current"]
    )
    r = await client.delete(f"{USERS}/{user['id']}/sessions/{ended}", headers=headers)
    assert r.status_code == 204
    # Its access tokens die at once too (contract §2).
    r = await client.get(f"{AUTH}/me", headers=bearer(second["access_token"]))
    assert r.status_code == 401
    r = await client.post(f"{AUTH}/refresh", json={"refresh_token": second["refresh_token"]})
    assert r.status_code == 401
    assert (await client.get(f"{AUTH}/me", headers=bearer(user["access_token"]))).status_code == 200
    r = await client.delete(f"{USERS}/{user['id']}/sessions/{ended}", headers=headers)
    assert r.status_code == 404

    assert (await client.delete(f"{USERS}/{user['id']}", headers=headers)).status_code == 204
    assert (await client.get(f"{AUTH}/me", headers=bearer(user["access_token"]))).status_code == 401
    assert (await client.get(f"{USERS}/{user['id']}", headers=headers)).status_code == 404


# -- overview, schedule, search ------------------------------------------------------------
async def test_overview_counts_and_the_schedule(client: httpx.AsyncClient, container: App) -> None:
    _, token = await user_token(container, admin=True)
    headers = bearer(token)
    r = await client.post(
        "/api/v1/products", json={"name": "Counted", "price": 1, "stock": 3}, headers=headers
    )
    assert r.status_code == 201
    r = await client.get("/api/v1/admin/overview", headers=headers)
    assert r.status_code == 200, r.text
    o = r.json()
    assert o["users"] >= 1
    assert o["products"]["Draft"] >= 1
    assert set(o["products"]) == {"Draft", "Active", "Inactive", "Archived"}
    assert set(o["jobs"]) >= {"queued", "scheduled", "retrying", "running", "succeeded", "dead"}
    assert o["dead_letters"] == o["jobs"]["dead"]
    assert o["events_per_minute"] >= 2  # auth.user_registered and product.created, at least
    assert set(o["plugins"]) == {"active", "disabled", "failed"}

    r = await client.get("/api/v1/admin/schedule", headers=headers)
    assert r.status_code == 200
    schedule = {p["job_type"]: p for p in r.json()["data"]}
    assert set(schedule) == {"sync.pending_users", "sync.cleanup_tokens"}
    now = datetime.now(UTC)
    for p in schedule.values():
        next_run = datetime.fromisoformat(p["next_run_at"].replace("Z", "+00:00"))
        assert 0 < (next_run - now).total_seconds() <= p["every_seconds"]


async def test_products_search_by_name(client: httpx.AsyncClient, container: App) -> None:
    _, token = await user_token(container, admin=True)
    headers = bearer(token)
    tag = uuid.uuid4().hex[:6]
    for name in (f"Red Lamp {tag}", f"Blue lamp {tag}", f"Chair {tag}", f"100% wool {tag}"):
        r = await client.post("/api/v1/products", json={"name": name, "price": 5}, headers=headers)
        assert r.status_code == 201
    await client.get("/api/v1/products")  # an unfiltered page in the list cache first
    r = await client.get("/api/v1/products", params={"q": f"LAMP {tag}"})
    assert sorted(p["name"] for p in r.json()["data"]) == [f"Blue lamp {tag}", f"Red Lamp {tag}"]
    assert r.json()["total"] == 2
    r = await client.get("/api/v1/products", params={"q": "0% w"})
    assert [p["name"] for p in r.json()["data"]] == [f"100% wool {tag}"]
    r = await client.get("/api/v1/products", params={"q": "_"})
    assert r.json()["total"] == 0


# -- the console itself ----------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_console_shell_and_assets(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "<script" in r.text
    assert "<script>" not in r.text  # no inline script
    assert "https://" not in r.text  # nothing from elsewhere

    r = await client.get("/admin/static/console.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    etag = r.headers["etag"]
    assert (
        await client.get("/admin/static/console.js", headers={"If-None-Match": etag})
    ).status_code == 304
    r = await client.get("/admin/static/../app.py")
    assert r.status_code == 404
    r = await client.get("/admin/static/nope.js")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "/admin" not in (await client.get("/openapi.json")).json()["paths"]
