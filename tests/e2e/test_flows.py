"""The capabilities together, as a user meets them: HTTP request -> outbox -> relay -> event
handler or job -> worker -> mail. On both backends: embedded (SQL queue, in-process dispatch)
and PostgreSQL + Redis (Redis queue, stream consumer group)."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import Message
from pathlib import Path

import httpx
import pytest

from arcana.bootstrap import App
from arcana.lifecycle import Lifecycle
from tests.auth_support import PASSWORD, bearer, login, register_and_login, user_token
from tests.conftest import wait_for

AUTH = "/api/v1/auth"


@pytest.fixture
async def running(process: Lifecycle) -> App:
    """The app with what `arcana serve` (embedded) or `arcana worker` runs beside it."""
    process.start_api_loops()
    process.start_worker_loops()
    return process.app


def mails(container: App) -> list[Message]:
    folder: Path = container.settings.var_dir / "mail"
    if not folder.exists():
        return []
    return [
        email.message_from_bytes(f.read_bytes(), policy=email.policy.default)
        for f in sorted(folder.glob("*.eml"))
    ]


def text_of(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    return ""


def mails_to(container: App, address: str, subject_start: str) -> list[Message]:
    return [
        m
        for m in mails(container)
        if m["To"] and address in m["To"] and str(m["Subject"]).strip().startswith(subject_start)
    ]


async def test_registration_sends_exactly_one_welcome_mail(
    client: httpx.AsyncClient, running: App
) -> None:
    u = await register_and_login(client)
    await wait_for(lambda: mails_to(running, u["email"], "Welcome to Arcana"), timeout=20)
    # Redelivery, relay restarts and a second worker never make a second one.
    assert len(mails_to(running, u["email"], "Welcome to Arcana")) == 1


async def test_forgot_password_mail_carries_a_token_that_resets_the_password(
    client: httpx.AsyncClient, running: App
) -> None:
    u = await register_and_login(client)
    r = await client.post(f"{AUTH}/forgot-password", json={"email": u["email"]})
    assert r.status_code == 202
    found = await wait_for(
        lambda: mails_to(running, u["email"], "Reset your Arcana password"), timeout=20
    )
    match = re.search(r"^Reset token: (\S+)$", text_of(found[0]), flags=re.M)
    assert match, text_of(found[0])
    new_password = "Brand-New-Pass-7"
    r = await client.post(
        f"{AUTH}/reset-password", json={"token": match.group(1), "new_password": new_password}
    )
    assert r.status_code == 204, r.text
    # Every session of before is dead; the new password works.
    assert (await client.get(f"{AUTH}/me", headers=bearer(u["access_token"]))).status_code == 401
    await login(client, u["email"], new_password)
    # And a password change is confirmed by a security notice.
    await wait_for(
        lambda: mails_to(running, u["email"], "Your Arcana password was changed"), timeout=20
    )


async def test_change_password_sends_a_security_notice(
    client: httpx.AsyncClient, running: App
) -> None:
    u = await register_and_login(client)
    r = await client.post(
        f"{AUTH}/change-password",
        json={"current_password": PASSWORD, "new_password": "Another-Pass-8"},
        headers=bearer(u["access_token"]),
    )
    assert r.status_code == 204, r.text
    await wait_for(
        lambda: mails_to(running, u["email"], "Your Arcana password was changed"), timeout=20
    )


async def test_low_stock_alerts_every_admin(client: httpx.AsyncClient, running: App) -> None:
    admin, token = await user_token(running, admin=True)
    r = await client.post(
        "/api/v1/products",
        json={"name": "Rare tome", "price": 12.5, "stock": 12},
        headers=bearer(token),
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = await client.post(
        f"/api/v1/products/{pid}/stock", json={"quantity_change": -7}, headers=bearer(token)
    )
    assert r.status_code == 200, r.text
    alerts = await wait_for(
        lambda: mails_to(running, admin.email, "Arcana stock alert"), timeout=20
    )
    assert "5 left" in str(alerts[0]["Subject"])
    assert pid in text_of(alerts[0])
    r = await client.post(
        f"/api/v1/products/{pid}/stock", json={"quantity_change": -5}, headers=bearer(token)
    )
    assert r.status_code == 200
    await wait_for(
        lambda: any(
            "out of stock" in str(m["Subject"])
            for m in mails_to(running, admin.email, "Arcana stock alert")
        ),
        timeout=20,
    )


async def test_users_with_a_role_are_found_by_whole_role_name(container: App) -> None:
    admin, _ = await user_token(container, admin=True)
    plain, _ = await user_token(container)
    found = {u.id for u in await container.users.list_with_role("admin")}
    assert admin.id in found
    assert plain.id not in found
    assert await container.users.list_with_role("adm") == []
    assert {admin.id, plain.id} <= {u.id for u in await container.users.list_with_role("user")}
