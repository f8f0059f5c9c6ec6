"""What the pure-ASGI fast paths share (``ProductFastPaths``, ``MeFastPath``).

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
from starlette.types import Send

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
