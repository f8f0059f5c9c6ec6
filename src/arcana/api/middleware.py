"""Pure-ASGI middleware: request id, body size limit, metrics by route template, last-resort 500.

Written as raw ASGI rather than ``BaseHTTPMiddleware`` because it sits on every request and
the latter costs an extra task and stream per call.
"""

from __future__ import annotations

import logging
import re
import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from arcana import tracing
from arcana.api.problems import problem_response
from arcana.errors import PayloadTooLarge
from arcana.log import REQUEST_ID
from arcana.metrics import HTTP_LATENCY, HTTP_REQUESTS
from arcana.request_ids import new_request_id

log = logging.getLogger("arcana.api")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


_ROUTE_METRICS: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
_ROUTE_METRICS_KEPT = 4096


def _route_metrics(method: str, template: str, status: int) -> tuple[Counter, Histogram]:
    """The request counter's and latency histogram's children for these labels. ``labels()``
    validates, locks and looks up on every call; the children are kept here instead (up to
    ``_ROUTE_METRICS_KEPT`` label sets: the method is the client's to choose)."""
    key = (method, template, status)
    children = _ROUTE_METRICS.get(key)
    if children is None:
        children = (
            HTTP_REQUESTS.labels(method, template, str(status)),
            HTTP_LATENCY.labels(method, template),
        )
        if len(_ROUTE_METRICS) < _ROUTE_METRICS_KEPT:
            _ROUTE_METRICS[key] = children
    return children


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        content_length = -1
        traceparent: str | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _VALID_REQUEST_ID.match(candidate):
                    request_id = candidate
            elif name == b"content-length":
                content_length = int(value) if value.isdigit() else -1
            elif name == b"traceparent":
                traceparent = value.decode("latin-1")[:128]
        if not request_id:
            request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        bound = REQUEST_ID.set(request_id)  # structlog's ``request_id`` (``arcana.log``)
        rid_header = (b"x-request-id", request_id.encode())
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        limit = self.max_body_bytes
        if content_length > limit:
            try:
                await self._too_large(scope, receive, send, request_id)
            finally:
                REQUEST_ID.reset(bound)
            return
        received = 0

        async def receive_limited() -> Message:
            # Bodies without Content-Length (chunked) are counted as they arrive. The error is
            # turned into a 413 problem by api/errors.py (FastAPI wraps body read errors).
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
            return message

        t0 = time.perf_counter()
        span_cm = (
            tracing.span(
                "HTTP " + scope["method"],  # renamed to "<method> <route template>" at the end
                kind="server",
                parent=traceparent,
            )
            if tracing.ENABLED
            else tracing.NULL_SPAN
        )
        current = span_cm.__enter__()
        if current is not None and not current.is_recording():
            current = None  # not sampled: skip building its attributes
        if current is not None:
            tracing.set_attributes(
                current, {"http.request.method": scope["method"], "arcana.request_id": request_id}
            )
        try:
            await self.app(scope, receive_limited, send_wrapper)
        except Exception:
            log.exception("unhandled error", extra={"path": scope.get("path")})
            if not started:
                response = problem_response(
                    500,
                    "INTERNAL",
                    "Internal error",
                    "An unexpected error occurred",
                    headers={"X-Request-ID": request_id},
                )
                await response(scope, receive, send)
                status = 500
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            requests, latency = _route_metrics(method, template, status)
            requests.inc()
            latency.observe(time.perf_counter() - t0)
            if current is not None:
                # Named by route template (bounded), never by the raw path.
                current.update_name(f"{method} {template}")
                tracing.set_attributes(
                    current, {"http.route": template, "http.response.status_code": status}
                )
                if status >= 500:
                    tracing.set_error(current, f"HTTP {status}")
            span_cm.__exit__(None, None, None)
            REQUEST_ID.reset(bound)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        HTTP_REQUESTS.labels(scope["method"], "unmatched", "413").inc()
        response = problem_response(
            413,
            "PAYLOAD_TOO_LARGE",
            "Payload too large",
            f"Request body exceeds {self.max_body_bytes} bytes",
            headers={"X-Request-ID": request_id, "Connection": "close"},
        )
        await response(scope, receive, send)
