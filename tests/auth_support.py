"""Helpers for tests that need real users and their tokens (any area may use them)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from arcana.bootstrap import App
from arcana.domain.audit import AuditEvent
from arcana.domain.users import User

PASSWORD = "Correct-Horse-9"


async def create_user(
    container: App,
    *,
    email: str | None = None,
    name: str = "Test User",
    password: str = PASSWORD,
    admin: bool = False,
) -> User:
    roles = frozenset({"user", "admin"} if admin else {"user"})
    email = email or f"u-{uuid.uuid4().hex[:10]}@example.com"
    return await container.users.create_user(email, name, password, roles)


async def user_token(container: App, *, admin: bool = False) -> tuple[User, str]:
    """A stored user and an access token that passes the generation check."""
    user = await create_user(container, admin=admin)
    token = container.auth_area.tokens.issue(user.id, user.roles, user.generation).token
    return user, token


async def register_and_login(
    client: httpx.AsyncClient,
    email: str | None = None,
    password: str = PASSWORD,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    email = email or f"u-{uuid.uuid4().hex[:10]}@example.com"
    resp = await client.post(
        "/api/v1/auth/register", json={"name": "Ada", "email": email, "password": password}
    )
    assert resp.status_code == 201, resp.text
    tokens = await login(client, email, password, headers=headers)
    return {"id": resp.json()["id"], "email": email, **tokens}


async def login(
    client: httpx.AsyncClient,
    email: str,
    password: str = PASSWORD,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    resp = await client.post(
        "/api/v1/auth/login", json={"email": email, "password": password}, headers=headers
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def run_reset_requests(container: App) -> None:
    """What a worker does with the forgot-password requests queued so far (the test app runs
    no relay or worker): each pending ``auth.password_reset_request`` outbox row is marked
    delivered and handled once, in order."""
    from datetime import UTC, datetime

    from sqlalchemy import select, update

    from arcana.adapters.tables import outbox

    async with container.db.engine.begin() as conn:
        rows = (
            await conn.execute(
                select(outbox.c.seq, outbox.c.data)
                .where(
                    outbox.c.event_type == "auth.password_reset_request",
                    outbox.c.published_at.is_(None),
                )
                .order_by(outbox.c.seq)
            )
        ).all()
        if rows:
            await conn.execute(
                update(outbox)
                .where(outbox.c.seq.in_([r.seq for r in rows]))
                .values(published_at=datetime.now(UTC))
            )
    for row in rows:
        await container.auth.issue_reset(str(row.data["payload"]["email"]))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class RecordingAuditSink:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def emit(self, event: AuditEvent) -> None:
        self.events.append(event)

    def of_type(self, event_type: str) -> list[AuditEvent]:
        return [e for e in self.events if e.event_type == event_type]
