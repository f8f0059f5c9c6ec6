"""What the pure-ASGI fast paths (``ProductFastPaths``, ``LoginFastPath``) share: reading a
request body themselves, and handing it on to the normal route when they do not answer."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from arcana.api.errors import arcana_error_answer
from arcana.errors import ArcanaError


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
