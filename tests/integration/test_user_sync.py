"""``sync.pending_users``: PENDING users pushed to a real webhook (or marked SYNCED)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from arcana.adapters.user_sync import WebhookUserSync
from arcana.bootstrap import App
from arcana.domain.users import SyncStatus
from arcana.services.users import UserSyncService
from tests.auth_support import create_user


class _Hook:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_for: set[str] = set()


@pytest.fixture
def webhook() -> Iterator[tuple[str, _Hook]]:
    hook = _Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            hook.received.append(body)
            status = 500 if body["email"] in hook.fail_for else 204
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/users", hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_pending_users_are_pushed_and_marked(
    container: App, webhook: tuple[str, _Hook]
) -> None:
    url, hook = webhook
    good = await create_user(container, email="good@example.com")
    bad = await create_user(container, email="bad@example.com")
    hook.fail_for.add("bad@example.com")
    service = UserSyncService(container.uow, WebhookUserSync(url, timeout=5))
    report = await service.sync_pending_users(attempts=2, retry_delay=0.01)
    assert (report.synced, report.failed) == (1, 1)
    good_after = await container.users.get_user(good.id)
    bad_after = await container.users.get_user(bad.id)
    assert good_after is not None
    assert bad_after is not None
    assert good_after.sync_status is SyncStatus.SYNCED
    assert bad_after.sync_status is SyncStatus.FAILED
    assert [r["email"] for r in hook.received].count("bad@example.com") == 2
    pushed = next(r for r in hook.received if r["email"] == "good@example.com")
    assert set(pushed) == {"id", "name", "email", "roles", "created_at", "updated_at"}
    # nothing PENDING any more
    assert await service.sync_pending_users() == type(report)(0, 0, [])


async def test_without_a_sync_url_users_are_marked_synced(container: App) -> None:
    user = await create_user(container)
    report = await container.user_sync.sync_pending_users()
    assert report.synced == 1
    after = await container.users.get_user(user.id)
    assert after is not None
    assert after.sync_status is SyncStatus.SYNCED
