"""Contract §2 (auth) and §8 through the ASGI app, on both backends."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import delete, func, select

from arcana.adapters.tables import auth_sessions, outbox, refresh_tokens, users
from arcana.api.app import create_app
from arcana.api.auth import MeFastPath
from arcana.bootstrap import App
from arcana.config import Settings
from arcana.domain.users import RefreshToken, Session
from arcana.lifecycle import Lifecycle
from tests.app_support import routes_broken
from tests.auth_support import (
    PASSWORD,
    RecordingAuditSink,
    bearer,
    login,
    register_and_login,
    run_reset_requests,
)
from tests.conftest import end_server_sessions, truncate_all

AUTH = "/api/v1/auth"


def _problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert {"type", "title", "status", "detail", "code"} <= set(body)
    assert body["code"] == code
    return body


def _unauthorized(resp: httpx.Response) -> None:
    _problem(resp, 401, "UNAUTHORIZED")
    assert resp.headers["www-authenticate"].startswith("Bearer")


async def _outbox(container: App) -> list[dict[str, Any]]:
    async with container.db.sessionmaker() as s:
        rows = (await s.execute(select(outbox).order_by(outbox.c.seq))).mappings().all()
    return [dict(r) for r in rows]


# -- register ------------------------------------------------------------------------------
async def test_register_returns_user_and_records_event(
    client: httpx.AsyncClient, container: App
) -> None:
    resp = await client.post(
        f"{AUTH}/register",
        json={"name": "Ada", "email": "  Ada.Lovelace@Example.COM ", "password": PASSWORD},
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert set(body) == {"id", "name", "email"}
    assert body["email"] == "ada.lovelace@example.com"
    uuid.UUID(body["id"])
    rows = await _outbox(container)
    events = [r for r in rows if r["kind"] == "event"]
    assert [e["event_type"] for e in events] == ["auth.user_registered"]
    assert events[0]["aggregate_id"] == body["id"]
    assert events[0]["data"]["data"] == {
        "userId": body["id"],
        "email": "ada.lovelace@example.com",
        "name": "Ada",
    }
    assert not [r for r in rows if r["kind"] == "job"]  # the welcome mail follows the event
    user = await container.users.get_user(body["id"])
    assert user is not None
    assert user.sync_status.value == "PENDING"
    assert user.roles == frozenset({"user"})
    assert user.password_hash.startswith("$argon2id$")


async def test_internal_domains_are_valid_emails(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        f"{AUTH}/register", json={"name": "Ops", "email": "ops@arcana.local", "password": PASSWORD}
    )
    assert resp.status_code == 201, resp.text


async def test_register_email_is_case_insensitive_and_unique(client: httpx.AsyncClient) -> None:
    body = {"name": "A", "email": "dup@example.com", "password": PASSWORD}
    assert (await client.post(f"{AUTH}/register", json=body)).status_code == 201
    body["email"] = "DUP@Example.com"
    _problem(await client.post(f"{AUTH}/register", json=body), 409, "CONFLICT")


@pytest.mark.parametrize(
    ("password", "rules"),
    [
        ("abc", {"at least 8", "upper-case", "digit"}),
        ("alllowercase1", {"upper-case"}),
        ("ALLUPPERCASE1", {"lower-case"}),
        ("NoDigitsHere", {"digit"}),
        ("Password1", {"too common"}),
        ("Aa1" + "x" * 126, {"at most 128"}),
    ],
)
async def test_weak_password_is_one_422_listing_every_rule(
    client: httpx.AsyncClient, password: str, rules: set[str]
) -> None:
    resp = await client.post(
        f"{AUTH}/register", json={"name": "A", "email": "weak@example.com", "password": password}
    )
    body = _problem(resp, 422, "VALIDATION_FAILED")
    messages = [e["msg"] for e in body["errors"]]
    assert len(messages) == len(rules), messages
    for rule in rules:
        assert any(rule in m for m in messages), (rule, messages)


@pytest.mark.parametrize(
    "payload",
    [
        {"name": "A", "email": "not-an-email", "password": PASSWORD},
        {"name": "A", "email": "a@localhost", "password": PASSWORD},
        {"name": "A", "email": "two@@example.com", "password": PASSWORD},
        {"name": "A", "email": "a" * 250 + "@example.com", "password": PASSWORD},
        {"name": "   ", "email": "a@example.com", "password": PASSWORD},
        {"name": "nul\u0000", "email": "a@example.com", "password": PASSWORD},
        {"name": "A", "email": "nul\u0000@example.com", "password": PASSWORD},
        {"name": "", "email": "a@example.com", "password": PASSWORD},
        {"name": "x" * 201, "email": "a@example.com", "password": PASSWORD},
        {"email": "a@example.com", "password": PASSWORD},
    ],
)
async def test_register_bad_input_is_422(
    client: httpx.AsyncClient, payload: dict[str, Any]
) -> None:
    _problem(await client.post(f"{AUTH}/register", json=payload), 422, "VALIDATION_FAILED")


# -- login ---------------------------------------------------------------------------------
@pytest.mark.overrides(audit=RecordingAuditSink)
async def test_login_returns_token_pair_and_audits(
    client: httpx.AsyncClient, container: App
) -> None:
    sink = container.audit
    assert isinstance(sink, RecordingAuditSink)
    u = await register_and_login(client, email="Mixed.Case@example.com")
    assert u["token_type"] == "Bearer"
    assert u["expires_in"] == container.settings.auth.access_token_ttl
    assert u["access_token"]
    assert u["refresh_token"]
    # the email logs in whatever its case
    await login(client, "MIXED.case@EXAMPLE.com")
    logins = sink.of_type("user.login")
    assert len(logins) == 2
    assert logins[0].user_id == u["id"]
    assert (logins[0].resource, logins[0].action) == ("auth", "login")
    assert logins[0].metadata["ip"] == "127.0.0.1"
    assert "user_agent" in logins[0].metadata


def _session_and_token(
    user_id: str, now: datetime, user_agent: str | None = None, ip: str | None = None
) -> tuple[Session, RefreshToken]:
    """A new session of ``user_id`` and its first refresh token, as a login makes them."""
    session = Session(
        id=str(uuid.uuid4()),
        user_id=user_id,
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(days=1),
        user_agent=user_agent,
        ip=ip,
    )
    token = RefreshToken(
        id=str(uuid.uuid4()),
        session_id=session.id,
        user_id=user_id,
        token_hash=uuid.uuid4().hex,
        created_at=now,
    )
    return session, token


async def test_a_login_whose_generation_moved_on_writes_no_session(
    client: httpx.AsyncClient, container: App
) -> None:
    """The login step (session + first refresh token, by the group commit on SQLite) writes
    only while the generation read before the password check still holds."""
    u = await register_and_login(client)
    before = await container.users.get_user(u["id"])
    assert before is not None
    resp = await client.post(f"{AUTH}/logout-all", headers=bearer(u["access_token"]))
    assert resp.status_code == 204, resp.text

    def attempt() -> tuple[Session, RefreshToken]:
        return _session_and_token(u["id"], datetime.now(UTC))

    async def written(session: Session, token: RefreshToken) -> tuple[int, int]:
        async with container.db.engine.connect() as conn:
            sessions = await conn.scalar(
                select(func.count()).where(auth_sessions.c.id == session.id)
            )
            tokens = await conn.scalar(select(func.count()).where(refresh_tokens.c.id == token.id))
        return int(sessions or 0), int(tokens or 0)

    starts = container.infra.session_starts()
    stale = attempt()
    assert not await starts.start(*stale, before.generation)
    assert await written(*stale) == (0, 0)
    after = await container.users.get_user(u["id"])
    assert after is not None
    assert after.generation != before.generation
    fresh = attempt()
    assert await starts.start(*fresh, after.generation)
    assert await written(*fresh) == (1, 1)


async def test_a_login_step_stores_what_sqlalchemy_binds(
    client: httpx.AsyncClient, container: App
) -> None:
    """The session and token rows of the login step (on SQLite written by the driver itself,
    with statements compiled once) compare equal, in SQL, to the same values bound by
    SQLAlchemy: on SQLite, timestamps in SQLAlchemy's text form, which its comparisons and
    the other writers use."""
    u = await register_and_login(client)
    user = await container.users.get_user(u["id"])
    assert user is not None
    now = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    session, token = _session_and_token(user.id, now, "agent/1", "10.0.0.1")
    assert await container.infra.session_starts().start(session, token, user.generation)
    async with container.db.engine.connect() as conn:
        sessions = await conn.scalar(
            select(func.count()).where(
                auth_sessions.c.id == session.id,
                auth_sessions.c.user_id == user.id,
                auth_sessions.c.created_at == now,
                auth_sessions.c.last_used_at == now,
                auth_sessions.c.expires_at == now + timedelta(days=1),
                auth_sessions.c.user_agent == "agent/1",
                auth_sessions.c.ip == "10.0.0.1",
                auth_sessions.c.revoked_at.is_(None),
            )
        )
        tokens = await conn.scalar(
            select(func.count()).where(
                refresh_tokens.c.id == token.id,
                refresh_tokens.c.session_id == session.id,
                refresh_tokens.c.user_id == user.id,
                refresh_tokens.c.token_hash == token.token_hash,
                refresh_tokens.c.created_at == now,
                refresh_tokens.c.revoked_at.is_(None),
            )
        )
    assert (sessions, tokens) == (1, 1)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_login_step_on_a_connection_the_server_ended_is_503_and_dropped(
    client: httpx.AsyncClient, container: App, pg_url: str
) -> None:
    """The login step runs on the driver directly: a pooled connection whose server session is
    gone answers as an outage (503, nothing written) and does not go back to the pool."""
    from arcana.errors import ServiceUnavailable

    u = await register_and_login(client)
    user = await container.users.get_user(u["id"])
    assert user is not None
    starts = container.infra.session_starts()
    assert await end_server_sessions(pg_url) >= 1
    refused: list[Session] = []
    for _ in range(container.db.engine.sync_engine.pool.size() + 10):
        session, token = _session_and_token(user.id, datetime.now(UTC))
        try:
            assert await starts.start(session, token, user.generation)
            break
        except ServiceUnavailable:
            refused.append(session)
    else:
        pytest.fail("every login step after the connections ended was refused")
    assert refused  # a dead connection was drawn, and answered as an outage
    for _ in range(5):  # and not again: it was dropped, not checked back in
        assert await starts.start(*_session_and_token(user.id, datetime.now(UTC)), user.generation)
    async with container.db.engine.connect() as conn:
        written = await conn.scalar(
            select(func.count()).where(auth_sessions.c.id.in_([s.id for s in refused]))
        )
    assert written == 0


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_login_runs_two_statements_on_postgresql(
    client: httpx.AsyncClient, container: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user read, then one statement for the session and its token (it was a share lock,
    two inserts and the commit's round trips in between), which commits by itself: no
    ``BEGIN``/``COMMIT`` round trips around it. Both run on the driver directly: SQLAlchemy
    runs nothing."""
    import asyncpg
    from sqlalchemy import event

    u = await register_and_login(client)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]).split(None, 1)[0].upper())

    transaction = asyncpg.transaction.Transaction
    started = transaction.start

    async def start(self: Any) -> None:
        statements.append("BEGIN")
        await started(self)

    monkeypatch.setattr(transaction, "start", start)
    fetchrow = asyncpg.connection.Connection.fetchrow

    async def on_driver(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        # A statement run on the driver directly (``AutocommitReads.first_row``).
        statements.append(query.split(None, 1)[0].upper() + " on the driver")
        return await fetchrow(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.connection.Connection, "fetchrow", on_driver)
    execute = asyncpg.connection.Connection.execute

    async def write_on_driver(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        # A write run on the driver directly (``execute_count``).
        statements.append(query.split(None, 1)[0].upper() + " on the driver")
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.connection.Connection, "execute", write_on_driver)
    engine = container.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        await login(client, u["email"])
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert statements == ["SELECT on the driver", "WITH on the driver"], statements


@pytest.mark.overrides(audit=RecordingAuditSink)
async def test_unknown_email_and_wrong_password_look_the_same(
    client: httpx.AsyncClient, container: App
) -> None:
    sink = container.audit
    assert isinstance(sink, RecordingAuditSink)
    u = await register_and_login(client)
    wrong = await client.post(
        f"{AUTH}/login", json={"email": u["email"], "password": "Wrong-password-1"}
    )
    unknown = await client.post(
        f"{AUTH}/login", json={"email": "nobody@example.com", "password": "Wrong-password-1"}
    )
    a = _problem(wrong, 401, "INVALID_CREDENTIALS")
    b = _problem(unknown, 401, "INVALID_CREDENTIALS")
    assert a == b
    failed = sink.of_type("user.login_failed")
    assert [e.user_id for e in failed] == [u["id"], ""]
    assert failed[1].metadata["email"] == "nobody@example.com"


async def test_login_bad_input_is_422(client: httpx.AsyncClient) -> None:
    _problem(
        await client.post(f"{AUTH}/login", json={"email": "a\u0000@b.co", "password": "y"}),
        422,
        "VALIDATION_FAILED",
    )
    _problem(
        await client.post(f"{AUTH}/login", json={"email": "x", "password": "y"}),
        422,
        "VALIDATION_FAILED",
    )
    _problem(
        await client.post(
            f"{AUTH}/login", content=b"{nope", headers={"content-type": "application/json"}
        ),
        422,
        "VALIDATION_FAILED",
    )


async def test_login_rehashes_when_parameters_changed(
    client: httpx.AsyncClient, container: App
) -> None:
    from arcana.adapters.passwords import Argon2PasswordHasher

    old = Argon2PasswordHasher(memory_kib=512, time_cost=1, parallelism=1)
    u = await register_and_login(client)
    async with container.db.sessionmaker() as s:
        await s.execute(
            users.update().where(users.c.id == u["id"]).values(password_hash=old.hash(PASSWORD))
        )
        await s.commit()
    await login(client, u["email"])
    user = await container.users.get_user(u["id"])
    assert user is not None
    assert f"m={container.settings.passwords.argon2_memory_kib}," in user.password_hash


# -- me and bearer tokens -------------------------------------------------------------------
@pytest.mark.overrides(audit=RecordingAuditSink)
async def test_me(client: httpx.AsyncClient, container: App) -> None:
    sink = container.audit
    assert isinstance(sink, RecordingAuditSink)
    u = await register_and_login(client)
    resp = await client.get(f"{AUTH}/me", headers=bearer(u["access_token"]))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"id", "name", "email", "roles", "created_at"}
    assert body["id"] == u["id"]
    assert body["roles"] == ["user"]
    access = sink.of_type("user.data_access")
    assert len(access) == 1
    assert (access[0].user_id, access[0].action) == (u["id"], "read")


async def test_me_without_or_with_malformed_bearer_is_401(client: httpx.AsyncClient) -> None:
    _unauthorized(await client.get(f"{AUTH}/me"))
    _unauthorized(await client.get(f"{AUTH}/me", headers=bearer("not.a.jwt")))
    _unauthorized(await client.get(f"{AUTH}/me", headers={"Authorization": "Basic Zm9vOmJhcg=="}))


def _without_me_fast_path(container: App) -> Any:
    """The app with every layer but ``MeFastPath``: ``/me`` answered by the FastAPI route."""
    app = create_app(container)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not MeFastPath]
    return app


async def test_me_fast_path_skips_fastapi_dependencies(
    client: httpx.AsyncClient, container: App
) -> None:
    """A plain bearer's ``/me`` is answered before FastAPI's routing and dependencies (see
    ``MeFastPath``): with the route's services dependency broken it still works."""
    u = await register_and_login(client)
    async with routes_broken(container) as own:
        resp = await own.get(f"{AUTH}/me", headers=bearer(u["access_token"]))
    assert resp.status_code == 200, resp.text
    assert resp.json()["id"] == u["id"]


async def test_me_fast_path_answers_as_the_route(client: httpx.AsyncClient, container: App) -> None:
    """The same requests through the app (``MeFastPath`` first) and through the FastAPI route
    alone: the same status, content type, ``WWW-Authenticate`` and the same body, byte for
    byte on a 200 — for a valid token, a name beyond ASCII, roles sorted, and every refusal
    (no token, other schemes and forms, forged, expired, revoked, ended session, gone user)."""
    transport = httpx.ASGITransport(app=_without_me_fast_path(container))
    routed = httpx.AsyncClient(transport=transport, base_url="http://test")

    async def both(headers: dict[str, str], status: int) -> None:
        a = await client.get(f"{AUTH}/me", headers=headers)
        b = await routed.get(f"{AUTH}/me", headers=headers)
        assert a.status_code == b.status_code == status, (a.text, b.text)
        for name in ("content-type", "content-length", "www-authenticate"):
            assert a.headers.get(name) == b.headers.get(name), name
        if status == 200:
            assert a.content == b.content
        else:
            ja, jb = a.json(), b.json()
            for volatile in ("instance", "request_id"):
                ja.pop(volatile, None), jb.pop(volatile, None)
            assert ja == jb

    email = f"u-{uuid.uuid4().hex[:10]}@example.com"
    resp = await client.post(
        f"{AUTH}/register",
        json={"name": 'Zoë Ünïcødé 日本 "q" \\', "email": email, "password": PASSWORD},
    )
    assert resp.status_code == 201, resp.text
    u = {"id": resp.json()["id"], **(await login(client, email))}
    token = u["access_token"]
    async with routed:
        await both(bearer(token), 200)
        await both({"Authorization": f"bearer {token}"}, 200)
        await both({"Authorization": f"Bearer  {token}"}, 200)  # the route strips it
        await both({"Authorization": f"Bearer {token} x"}, 401)
        await both({}, 401)
        await both({"Authorization": "Basic Zm9vOmJhcg=="}, 401)
        await both(bearer("not.a.jwt"), 401)
        for kind in ("expired", "wrong_key", "alg_none"):
            await both(bearer(_forged(container, u["id"], kind)), 401)
        admin = _forged(container, u["id"], "valid")  # roles admin and user, sorted on the way out
        await both(bearer(admin), 200)
        other = await login(client, email)
        await client.post(f"{AUTH}/logout", json={"refresh_token": other["refresh_token"]})
        await both(bearer(other["access_token"]), 401)  # its session ended
        await client.post(f"{AUTH}/logout-all", headers=bearer(token))
        await both(bearer(token), 401)  # revoked
        unknown = container.auth_area.tokens.issue(str(uuid.uuid4()), frozenset({"user"}), 0)
        await both(bearer(unknown.token), 401)


def _forged(container: App, user_id: str, kind: str) -> str:
    s = container.settings
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "roles": ["user", "admin"],
        "gen": 0,
        "iat": now,
        "exp": now + 600,
        "iss": s.auth.jwt_issuer,
        "aud": s.auth.jwt_audience,
        "jti": uuid.uuid4().hex,
    }
    key = container.auth_area.jwt_key
    headers = {"typ": "at+jwt"}
    if kind == "alg_none":
        return jwt.encode(claims, None, algorithm="none", headers=headers)  # type: ignore[arg-type]
    if kind == "wrong_key":
        key = "another-secret-" + "y" * 40
    elif kind == "expired":
        claims["iat"], claims["exp"] = now - 1200, now - 600
    elif kind == "wrong_audience":
        claims["aud"] = "someone-else"
    elif kind == "wrong_issuer":
        claims["iss"] = "someone-else"
    elif kind == "wrong_typ":
        headers = {"typ": "JWT"}
    elif kind == "hs512":
        return jwt.encode(claims, key * 2, algorithm="HS512", headers=headers)
    return jwt.encode(claims, key, algorithm="HS256", headers=headers)


@pytest.mark.parametrize(
    "kind",
    ["alg_none", "wrong_key", "expired", "wrong_audience", "wrong_issuer", "wrong_typ", "hs512"],
)
async def test_forged_access_tokens_are_401(
    client: httpx.AsyncClient, container: App, kind: str
) -> None:
    u = await register_and_login(client)
    # the control: a well-formed token for the same user works
    assert (
        await client.get(f"{AUTH}/me", headers=bearer(_forged(container, u["id"], "valid")))
    ).status_code == 200
    _unauthorized(await client.get(f"{AUTH}/me", headers=bearer(_forged(container, u["id"], kind))))


async def test_deleted_users_tokens_fail(client: httpx.AsyncClient, container: App) -> None:
    u = await register_and_login(client)
    assert (await client.get(f"{AUTH}/me", headers=bearer(u["access_token"]))).status_code == 200
    async with container.db.sessionmaker() as s:
        await s.execute(delete(users).where(users.c.id == u["id"]))
        await s.commit()
    await container.auth_area.generations.store(
        u["id"], None
    )  # what a user deletion does after commit
    _unauthorized(await client.get(f"{AUTH}/me", headers=bearer(u["access_token"])))
    resp = await client.post(f"{AUTH}/refresh", json={"refresh_token": u["refresh_token"]})
    _problem(resp, 401, "TOKEN_EXPIRED")


async def test_token_for_unknown_user_fails(client: httpx.AsyncClient, container: App) -> None:
    token = container.auth_area.tokens.issue(str(uuid.uuid4()), frozenset({"user"}), 0).token
    _unauthorized(await client.get(f"{AUTH}/me", headers=bearer(token)))


# -- refresh, rotation, reuse ---------------------------------------------------------------
async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(f"{AUTH}/refresh", json={"refresh_token": token})


async def test_refresh_rotates_and_reuse_revokes_only_that_family(
    client: httpx.AsyncClient,
) -> None:
    u = await register_and_login(client)
    other = await login(client, u["email"])  # a second session of the same user
    resp = await _refresh(client, u["refresh_token"])
    assert resp.status_code == 200, resp.text
    pair = resp.json()
    assert set(pair) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert pair["refresh_token"] != u["refresh_token"]
    assert (await client.get(f"{AUTH}/me", headers=bearer(pair["access_token"]))).status_code == 200
    # presenting the rotated-away token is reuse: 401 and the whole family ends …
    _problem(await _refresh(client, u["refresh_token"]), 401, "TOKEN_EXPIRED")
    _problem(await _refresh(client, pair["refresh_token"]), 401, "TOKEN_EXPIRED")
    # … while the other session lives on
    resp = await _refresh(client, other["refresh_token"])
    assert resp.status_code == 200, resp.text


async def test_refresh_unknown_or_garbage_is_token_expired(client: httpx.AsyncClient) -> None:
    _problem(await _refresh(client, "x" * 43), 401, "TOKEN_EXPIRED")
    _problem(await client.post(f"{AUTH}/refresh", json={}), 422, "VALIDATION_FAILED")


async def test_concurrent_refresh_of_one_token_has_one_winner(settings: Settings) -> None:
    # With the production default of a reuse grace window, the duplicates of a concurrent
    # refresh lose without ending the session, however late they reach the database.
    if not settings.is_sqlite:
        await truncate_all(settings.database.url.get_secret_value())
    process = Lifecycle.build(settings.replace(refresh_reuse_grace_seconds=30))
    container = process.app
    await process.start(migrate_embedded=False)
    transport = httpx.ASGITransport(app=create_app(container), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            u = await register_and_login(client)
            results = await asyncio.gather(
                *(_refresh(client, u["refresh_token"]) for _ in range(6))
            )
            codes = sorted(r.status_code for r in results)
            assert codes == [200, 401, 401, 401, 401, 401], [r.text for r in results]
            winner = next(r for r in results if r.status_code == 200).json()
            # the race is not reuse: the winner's new token still works
            assert (await _refresh(client, winner["refresh_token"])).status_code == 200
    finally:
        await process.stop()


async def test_a_rotated_token_presented_after_the_grace_window_is_reuse(
    settings: Settings,
) -> None:
    """Inside the window a replay is a lost race (the session lives on); after it, the same
    replay is reuse (the session ends). Each half fails if the window is ignored or endless.
    The window is generous next to one request, so a loaded machine stays inside it."""
    grace = 2.0
    if not settings.is_sqlite:
        await truncate_all(settings.database.url.get_secret_value())
    process = Lifecycle.build(settings.replace(refresh_reuse_grace_seconds=grace))
    container = process.app
    await process.start(migrate_embedded=False)
    transport = httpx.ASGITransport(app=create_app(container), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            u = await register_and_login(client)
            resp = await _refresh(client, u["refresh_token"])
            # The server stamped the rotation before it answered: from here on, waiting
            # ``grace`` seconds is certain to leave the window.
            rotated_by = time.monotonic()
            assert resp.status_code == 200, resp.text
            # Inside the window: a lost race, and the session lives on.
            _problem(await _refresh(client, u["refresh_token"]), 401, "TOKEN_EXPIRED")
            assert time.monotonic() - rotated_by < grace, "the replay did not land in the window"
            resp = await _refresh(client, resp.json()["refresh_token"])
            assert resp.status_code == 200, resp.text
            live = resp.json()["refresh_token"]
            # After the window the same replay is reuse: the session and its newest token end.
            await asyncio.sleep(max(0.0, rotated_by + grace + 0.1 - time.monotonic()))
            _problem(await _refresh(client, u["refresh_token"]), 401, "TOKEN_EXPIRED")
            _problem(await _refresh(client, live), 401, "TOKEN_EXPIRED")
    finally:
        await process.stop()


async def test_refresh_idle_timeout_and_absolute_lifetime(
    client: httpx.AsyncClient, container: App
) -> None:
    from datetime import UTC, datetime, timedelta

    from arcana.adapters.tables import auth_sessions

    idle = await register_and_login(client)
    absolute = await login(client, idle["email"])
    past = datetime.now(UTC) - timedelta(seconds=container.settings.auth.refresh_idle_ttl + 5)
    async with container.db.sessionmaker() as s:
        sessions = (
            (await s.execute(select(auth_sessions.c.id).order_by(auth_sessions.c.created_at)))
            .scalars()
            .all()
        )
        await s.execute(
            auth_sessions.update()
            .where(auth_sessions.c.id == sessions[0])
            .values(last_used_at=past)
        )
        await s.execute(
            auth_sessions.update()
            .where(auth_sessions.c.id == sessions[1])
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await s.commit()
    _problem(await _refresh(client, idle["refresh_token"]), 401, "TOKEN_EXPIRED")
    _problem(await _refresh(client, absolute["refresh_token"]), 401, "TOKEN_EXPIRED")


# -- logout ---------------------------------------------------------------------------------
async def test_logout_ends_the_session(client: httpx.AsyncClient) -> None:
    u = await register_and_login(client)
    resp = await client.post(f"{AUTH}/logout", json={"refresh_token": u["refresh_token"]})
    assert resp.status_code == 204
    _problem(await _refresh(client, u["refresh_token"]), 401, "TOKEN_EXPIRED")
    resp = await client.post(f"{AUTH}/logout", json={"refresh_token": "unknown-token"})
    assert resp.status_code == 204


async def test_logout_all_kills_older_tokens_and_not_newer(
    client: httpx.AsyncClient,
) -> None:
    u = await register_and_login(client)
    second = await login(client, u["email"])
    resp = await client.post(f"{AUTH}/logout-all", headers=bearer(u["access_token"]))
    assert resp.status_code == 204
    _unauthorized(await client.get(f"{AUTH}/me", headers=bearer(u["access_token"])))
    _unauthorized(await client.get(f"{AUTH}/me", headers=bearer(second["access_token"])))
    _problem(await _refresh(client, u["refresh_token"]), 401, "TOKEN_EXPIRED")
    _problem(await _refresh(client, second["refresh_token"]), 401, "TOKEN_EXPIRED")
    # a token issued right after (same second included) works
    fresh = await login(client, u["email"])
    assert (
        await client.get(f"{AUTH}/me", headers=bearer(fresh["access_token"]))
    ).status_code == 200
    _unauthorized(await client.post(f"{AUTH}/logout-all"))


# -- change password ------------------------------------------------------------------------
async def test_change_password(client: httpx.AsyncClient, container: App) -> None:
    u = await register_and_login(client)
    h = bearer(u["access_token"])
    new = "Another-Secret-42"
    resp = await client.post(
        f"{AUTH}/change-password", json={"current_password": "Wrong-pass-1", "new_password": new}
    )
    _unauthorized(resp)  # authentication comes first
    resp = await client.post(
        f"{AUTH}/change-password",
        json={"current_password": "Wrong-pass-1", "new_password": new},
        headers=h,
    )
    _problem(resp, 401, "INVALID_CREDENTIALS")
    resp = await client.post(
        f"{AUTH}/change-password",
        json={"current_password": PASSWORD, "new_password": "weak"},
        headers=h,
    )
    _problem(resp, 422, "VALIDATION_FAILED")
    resp = await client.post(
        f"{AUTH}/change-password",
        json={"current_password": PASSWORD, "new_password": new},
        headers=h,
    )
    assert resp.status_code == 204, resp.text
    _unauthorized(await client.get(f"{AUTH}/me", headers=h))
    _problem(await _refresh(client, u["refresh_token"]), 401, "TOKEN_EXPIRED")
    resp = await client.post(f"{AUTH}/login", json={"email": u["email"], "password": PASSWORD})
    _problem(resp, 401, "INVALID_CREDENTIALS")
    fresh = await login(client, u["email"], new)
    assert (
        await client.get(f"{AUTH}/me", headers=bearer(fresh["access_token"]))
    ).status_code == 200
    events = [r for r in await _outbox(container) if r["event_type"] == "auth.password_changed"]
    assert len(events) == 1
    assert events[0]["data"]["data"] == {"userId": u["id"]}


# -- forgot / reset password ----------------------------------------------------------------
async def _reset_jobs(container: App) -> list[dict[str, Any]]:
    """The reset jobs in the outbox, their sealed token opened (forgot-password does its work
    after answering, so wait for it first)."""
    await run_reset_requests(container)
    jobs = [
        r["data"]
        for r in await _outbox(container)
        if r["kind"] == "job" and r["event_type"] == "email.password_reset"
    ]
    for job in jobs:
        assert job["payload"]["reset_token"].startswith("sealed:v1:")
        job["payload"]["reset_token"] = container.auth_area.sealer.unseal(
            job["payload"]["reset_token"]
        )
    return jobs


async def test_forgot_password_is_202_for_anyone(client: httpx.AsyncClient, container: App) -> None:
    resp = await client.post(f"{AUTH}/forgot-password", json={"email": "ghost@example.com"})
    assert resp.status_code == 202
    assert await _reset_jobs(container) == []
    u = await register_and_login(client)
    resp = await client.post(f"{AUTH}/forgot-password", json={"email": u["email"].upper()})
    assert resp.status_code == 202
    jobs = await _reset_jobs(container)
    assert len(jobs) == 1
    assert jobs[0]["priority"] == "HIGH"
    assert jobs[0]["payload"]["email"] == u["email"]
    assert len(jobs[0]["payload"]["reset_token"]) >= 43


async def test_reset_password_is_single_use_and_revokes_sessions(
    client: httpx.AsyncClient, container: App
) -> None:
    u = await register_and_login(client)
    await client.post(f"{AUTH}/forgot-password", json={"email": u["email"]})
    token = (await _reset_jobs(container))[0]["payload"]["reset_token"]
    new = "Brand-New-Pass-7"
    _problem(
        await client.post(f"{AUTH}/reset-password", json={"token": "bogus", "new_password": new}),
        401,
        "TOKEN_EXPIRED",
    )
    _problem(
        await client.post(f"{AUTH}/reset-password", json={"token": token, "new_password": "weak"}),
        422,
        "VALIDATION_FAILED",
    )
    resp = await client.post(f"{AUTH}/reset-password", json={"token": token, "new_password": new})
    assert resp.status_code == 204, resp.text
    _problem(
        await client.post(f"{AUTH}/reset-password", json={"token": token, "new_password": new}),
        401,
        "TOKEN_EXPIRED",
    )
    _unauthorized(await client.get(f"{AUTH}/me", headers=bearer(u["access_token"])))
    _problem(await _refresh(client, u["refresh_token"]), 401, "TOKEN_EXPIRED")
    await login(client, u["email"], new)
    assert any(r["event_type"] == "auth.password_changed" for r in await _outbox(container))


async def test_reset_token_expires(client: httpx.AsyncClient, container: App) -> None:
    from datetime import UTC, datetime, timedelta

    from arcana.adapters.tables import password_reset_tokens

    u = await register_and_login(client)
    await client.post(f"{AUTH}/forgot-password", json={"email": u["email"]})
    token = (await _reset_jobs(container))[0]["payload"]["reset_token"]
    async with container.db.sessionmaker() as s:
        await s.execute(
            password_reset_tokens.update().values(
                expires_at=datetime.now(UTC) - timedelta(seconds=1)
            )
        )
        await s.commit()
    resp = await client.post(
        f"{AUTH}/reset-password", json={"token": token, "new_password": "Brand-New-Pass-7"}
    )
    _problem(resp, 401, "TOKEN_EXPIRED")


# -- sessions -------------------------------------------------------------------------------
async def test_sessions_list_and_delete(client: httpx.AsyncClient) -> None:
    a = await register_and_login(client, headers={"User-Agent": "laptop/1.0"})
    b = await login(client, a["email"], headers={"User-Agent": "phone/2.0"})
    resp = await client.get(f"{AUTH}/sessions", headers=bearer(b["access_token"]))
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert len(data) == 2
    assert {s["user_agent"] for s in data} == {"laptop/1.0", "phone/2.0"}
    for s in data:
        assert set(s) == {"id", "created_at", "last_used_at", "user_agent", "ip", "current"}
        assert s["ip"] == "127.0.0.1"
    current = [s for s in data if s["current"]]
    assert len(current) == 1
    assert current[0]["user_agent"] == "phone/2.0"
    laptop = next(s for s in data if s["user_agent"] == "laptop/1.0")
    # someone else cannot end it
    stranger = await register_and_login(client)
    resp = await client.delete(
        f"{AUTH}/sessions/{laptop['id']}", headers=bearer(stranger["access_token"])
    )
    _problem(resp, 404, "NOT_FOUND")
    resp = await client.delete(f"{AUTH}/sessions/{laptop['id']}", headers=bearer(b["access_token"]))
    assert resp.status_code == 204
    _problem(await _refresh(client, a["refresh_token"]), 401, "TOKEN_EXPIRED")
    assert (await _refresh(client, b["refresh_token"])).status_code == 200
    resp = await client.get(f"{AUTH}/sessions", headers=bearer(b["access_token"]))
    assert [s["user_agent"] for s in resp.json()["data"]] == ["phone/2.0"]
    resp = await client.delete(f"{AUTH}/sessions/{laptop['id']}", headers=bearer(b["access_token"]))
    _problem(resp, 404, "NOT_FOUND")
    resp = await client.delete(f"{AUTH}/sessions/not-a-uuid", headers=bearer(b["access_token"]))
    _problem(resp, 422, "VALIDATION_FAILED")
    _unauthorized(await client.delete(f"{AUTH}/sessions/not-a-uuid"))
    _unauthorized(await client.get(f"{AUTH}/sessions"))


async def test_refresh_keeps_session_and_current_flag(client: httpx.AsyncClient) -> None:
    u = await register_and_login(client)
    pair = (await _refresh(client, u["refresh_token"])).json()
    data = (await client.get(f"{AUTH}/sessions", headers=bearer(pair["access_token"]))).json()[
        "data"
    ]
    assert len(data) == 1
    assert data[0]["current"] is True


# -- maintenance ----------------------------------------------------------------------------
async def test_cleanup_tokens_deletes_dead_rows_only(
    client: httpx.AsyncClient, container: App
) -> None:
    keep = await register_and_login(client)
    gone = await login(client, keep["email"])
    await client.post(f"{AUTH}/logout", json={"refresh_token": gone["refresh_token"]})
    await client.post(f"{AUTH}/forgot-password", json={"email": keep["email"]})
    await client.post(f"{AUTH}/forgot-password", json={"email": keep["email"]})  # first one dies
    await run_reset_requests(container)
    deleted = await container.auth.cleanup_tokens(batch_size=1)
    # The superseded reset token; the ended session stays for one access-token lifetime (it
    # is what keeps that session's access tokens dead).
    assert deleted == 1
    async with container.db.sessionmaker() as s:
        await s.execute(
            auth_sessions.update()
            .where(auth_sessions.c.revoked_at.is_not(None))
            .values(revoked_at=datetime.now(UTC) - timedelta(seconds=901))
        )
        await s.commit()
    assert await container.auth.cleanup_tokens(batch_size=1) == 2  # the session, its token
    assert await container.auth.cleanup_tokens(batch_size=100) == 0
    assert (await _refresh(client, keep["refresh_token"])).status_code == 200
