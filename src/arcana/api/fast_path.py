"""What the pure-ASGI fast paths share (``ProductFastPaths``, ``MeFastPath``, ``LoginFastPath``):
the bearer, the route to put in the scope, reading a request body themselves and handing it on
to the normal route when they do not answer, and the JSON answer.

A fast path answers a hot route before FastAPI's routing and dependency solving run (in
profiles they cost more than the work of those routes). It does the route's own steps through
the same services and declines — hands the request to the app unchanged — whenever it is not
sure to answer exactly as the route would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter
from starlette.routing import BaseRoute
from starlette.types import Message, Receive, Scope, Send

from arcana.api.errors import arcana_error_answer
from arcana.errors import ArcanaError

JSON_HEADER = (b"content-type", b"application/json")


def plain_bearer(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header in its plain form, as
    ``HTTPBearer`` parses it; ``None`` for no header or any other form (the route decides)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials and " " not in credentials:
                return credentials
            return None
    return None


def route_of(router: APIRouter, endpoint: Callable[..., Any]) -> BaseRoute | None:
    """The route of ``endpoint`` in ``router``, to put in the scope as the normal routing
    would (metrics and spans are named by its template). Looked up by endpoint: the app's own
    route list nests included routers (FastAPI's ``_IncludedRouter``, which has no template),
    so matching the request against it finds the router."""
    for route in router.routes:
        if getattr(route, "endpoint", None) is endpoint:
            return route
    return None


async def send_json(send: Send, body: bytes, status: int = 200) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), JSON_HEADER],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def read_body(
    scope: Scope, receive: Receive, send: Send
) -> tuple[bytes, Message | None] | None:
    """The whole request body, and the message that ended it early (a disconnect) or None.
    None when the body limit (``RequestContextMiddleware``) refused it: then the refusal is
    answered here, as the route would answer it."""
    chunks: list[bytes] = []
    more = True
    while more:
        try:
            message = await receive()
        except ArcanaError as exc:
            await arcana_error_answer(exc, None)(scope, receive, send)
            return None
        if message["type"] != "http.request":  # the client left: the route sees it too
            return b"".join(chunks), message
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks), None


def replay(body: bytes, pending: Message | None, receive: Receive) -> Receive:
    """``receive`` for the route after a fast path read the body: the body first, then
    ``pending`` (a message read after it), then the client's own."""
    queue: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    if pending is not None:
        queue.append(pending)

    async def replayed() -> Message:
        return queue.pop(0) if queue else await receive()

    return replayed
