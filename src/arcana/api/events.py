"""``GET /api/v1/events/stream``: domain events as Server-Sent Events (admin only)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.responses import StreamingResponse

from arcana.api.deps import AdminPrincipal, ServicesDep
from arcana.domain.delivery import EventSubscription, FeedItem
from arcana.domain.identity import Principal, Role
from arcana.errors import Forbidden, Unauthorized, ValidationFailed
from arcana.metrics import EVENTS_STREAM_CLIENTS
from arcana.services.identity import IdentityService

router = APIRouter(prefix="/api/v1/events", tags=["events"])

KEEPALIVE_SECONDS = 15.0
RECHECK_SECONDS = 1.0
# One stream entry id, or (event partitions) one per stream joined by "_".
_EVENT_ID = re.compile(r"^\d{1,20}(-\d{1,20})?(_\d{1,20}-\d{1,20}){0,63}$")


def _frame(item: FeedItem) -> bytes:
    data = json.dumps(item.envelope, separators=(",", ":"), ensure_ascii=False)
    return f"id: {item.id}\nevent: {item.event_type}\ndata: {data}\n\n".encode()


async def _still_allowed(identity: IdentityService, principal: Principal) -> bool:
    try:
        await identity.revalidate(principal)
        IdentityService.require_role(principal, Role.ADMIN)
    except (Unauthorized, Forbidden):
        return False
    return True


async def _frames(
    request: Request, sub: EventSubscription, identity: IdentityService, principal: Principal
) -> AsyncIterator[bytes]:
    """The bearer is checked again every ``RECHECK_SECONDS`` (a cache read): the stream ends
    once the token expires, its session ends, the user's tokens are revoked (logout-all, a
    password change, the admin role revoked) or the user is deleted."""
    EVENTS_STREAM_CLIENTS.inc()
    loop = asyncio.get_running_loop()
    checked = last_sent = loop.time()
    try:
        # Sent once the subscription is live: anything committed after this is delivered.
        yield b": connected\nretry: 2000\n\n"
        async for item in sub.items(RECHECK_SECONDS):
            now = loop.time()
            if now - checked >= RECHECK_SECONDS or item is None:
                checked = now
                if not await _still_allowed(identity, principal):
                    yield b'event: end\ndata: {"reason":"unauthorized"}\n\n'
                    return
            if item is None:
                if await request.is_disconnected():
                    return
                if now - last_sent >= KEEPALIVE_SECONDS:
                    last_sent = now
                    yield b": keep-alive\n\n"
            else:
                last_sent = now
                yield _frame(item)
    finally:
        EVENTS_STREAM_CLIENTS.dec()
        await sub.close()


@router.get(
    "/stream",
    summary="Live domain events (Server-Sent Events)",
    description=(
        "Each event is sent with `id:` (stream entry id; the outbox sequence number in "
        "embedded mode), `event:` (event type) and `data:` (the JSON envelope). Reconnect "
        "with `Last-Event-ID` to resume after the last event seen."
    ),
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_events(
    request: Request,
    services: ServicesDep,
    admin: AdminPrincipal,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    if last_event_id is not None:
        last_event_id = last_event_id.strip() or None
    if last_event_id is not None and not _EVENT_ID.match(last_event_id):
        raise ValidationFailed("Last-Event-ID must be an event stream id such as 1700000000000-0")
    sub = await services.feed.subscribe(last_event_id)
    return StreamingResponse(
        _frames(request, sub, services.identity, admin),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
