"""Server interceptors, outermost first: metrics → logging (request id) → deadline → errors →
auth. Each wraps the unary handler of the call; the principal reaches the servicer through a
context variable."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import structlog

from arcana import tracing
from arcana.domain.identity import Principal, Role
from arcana.errors import ArcanaError, Forbidden, Unauthorized, ValidationFailed
from arcana.metrics import GRPC_LATENCY, GRPC_REQUESTS
from arcana.rpc.errors import message_for, status_for
from arcana.services.identity import IdentityService

log = logging.getLogger("arcana.rpc")

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Wrapper = Callable[[Handler, str], Handler]

current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "grpc_principal", default=None
)


def _short(method: str) -> str:
    return method.rsplit("/", 1)[-1]


class _UnaryInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Applies ``wrap`` to the unary-unary behaviour of each method (others pass through)."""

    def __init__(self, wrap: Wrapper) -> None:
        self._wrap = wrap
        self._cache: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        # intercept_service runs on every call; the wrapped handler of a method never changes,
        # so it is built once per method.
        cached = self._cache.get(details.method)
        if cached is not None:
            return cached
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        behaviour = handler.unary_unary
        deserializer = handler.request_deserializer
        if deserializer is not None and not getattr(deserializer, "_tolerant", False):
            # Innermost layer: bytes that do not parse reach the servicer as ``Malformed`` and
            # are refused after authentication, like any invalid input.
            deserializer = _tolerant(deserializer)
            behaviour = _reject_malformed(behaviour)
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._wrap(behaviour, details.method),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
        self._cache[details.method] = wrapped
        return wrapped


def chain(*interceptors: grpc.aio.ServerInterceptor) -> grpc.aio.ServerInterceptor:
    """The given interceptors (outermost first) as one: grpc.aio awaits every interceptor's
    ``intercept_service`` on every call, so five layers cost five extra awaits per call before
    the handler runs; chained, the handler is composed once per method and looked up once."""
    wraps = [i._wrap for i in interceptors if isinstance(i, _UnaryInterceptor)]
    if len(wraps) != len(interceptors):
        raise TypeError("chain() takes interceptors built by this module")

    def wrap(inner: Handler, method: str) -> Handler:
        for each in reversed(wraps):
            inner = each(inner, method)
        return inner

    return _UnaryInterceptor(wrap)


class Malformed:
    """Stands for a request whose bytes are not a valid message of the method's type."""

    def __init__(self, error: str) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """grpc answers UNKNOWN (and logs a trace) when deserializing fails; this one hands the
    servicer chain a ``Malformed`` instead, so the client gets INVALID_ARGUMENT."""

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:
            return Malformed(type(exc).__name__)

    deserialize._tolerant = True  # type: ignore[attr-defined]
    return deserialize


def _reject_malformed(inner: Handler) -> Handler:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            raise ValidationFailed(f"The request is not a valid protobuf message ({request.error})")
        return await inner(request, context)

    return handler


def _status_of(context: grpc.aio.ServicerContext, exc: BaseException | None) -> str:
    code = None
    try:
        code = context.code()
    except Exception:
        code = None
    if code is None:
        if exc is None:
            return "OK"
        if isinstance(exc, asyncio.CancelledError):
            return "CANCELLED"
        return "UNKNOWN"
    name = getattr(code, "name", None)
    return name if isinstance(name, str) else str(code)


def metrics_interceptor() -> grpc.aio.ServerInterceptor:
    def wrap(inner: Handler, method: str) -> Handler:
        name = _short(method)
        latency = GRPC_LATENCY.labels(name)

        async def measured(
            request: Any, context: grpc.aio.ServicerContext, current: Any = None
        ) -> Any:
            t0 = time.perf_counter()
            exc: BaseException | None = None
            try:
                return await inner(request, context)
            except BaseException as e:
                exc = e
                raise
            finally:
                latency.observe(time.perf_counter() - t0)
                code = _status_of(context, exc)
                GRPC_REQUESTS.labels(name, code).inc()
                if current is not None:
                    tracing.set_attributes(current, {"rpc.grpc.status_code": code})
                    if code not in ("OK", "NOT_FOUND", "INVALID_ARGUMENT", "ALREADY_EXISTS"):
                        tracing.set_error(current, code)

        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if not tracing.ENABLED:
                return await measured(request, context)
            parent = None
            for key, value in context.invocation_metadata() or ():
                if key == "traceparent":
                    parent = str(value)[:128]
            with tracing.span(
                f"grpc {method}",
                {"rpc.system": "grpc", "rpc.method": name},
                kind="server",
                parent=parent,
            ) as current:
                return await measured(request, context, current)

        return handler

    return _UnaryInterceptor(wrap)


def logging_interceptor() -> grpc.aio.ServerInterceptor:
    """Request id from ``x-request-id`` metadata (or a new one), echoed in trailing metadata
    and bound to the log context; failures are logged with it."""

    def wrap(inner: Handler, method: str) -> Handler:
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            request_id = ""
            for key, value in context.invocation_metadata() or ():
                if key == "x-request-id" and isinstance(value, str) and 0 < len(value) <= 128:
                    request_id = value
            request_id = request_id or uuid.uuid4().hex
            context.set_trailing_metadata((("x-request-id", request_id),))
            structlog.contextvars.bind_contextvars(request_id=request_id)
            try:
                return await inner(request, context)
            finally:
                code = _status_of(context, None)
                if code not in ("OK", "NOT_FOUND", "INVALID_ARGUMENT"):
                    log.info("grpc %s -> %s", method, code, extra={"request_id": request_id})
                structlog.contextvars.unbind_contextvars("request_id")

        return handler

    return _UnaryInterceptor(wrap)


def deadline_interceptor() -> grpc.aio.ServerInterceptor:
    """A call past its deadline stops its work (the task is cancelled at the deadline)."""

    def wrap(inner: Handler, method: str) -> Handler:
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            remaining = context.time_remaining()
            if remaining is None:
                return await inner(request, context)
            try:
                async with asyncio.timeout(max(remaining, 0.0)):
                    return await inner(request, context)
            except TimeoutError:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded")

        return handler

    return _UnaryInterceptor(wrap)


def error_interceptor() -> grpc.aio.ServerInterceptor:
    """Domain errors → status codes with a readable message; anything else → INTERNAL with a
    generic message (the trace is logged, never sent)."""

    def wrap(inner: Handler, method: str) -> Handler:
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await inner(request, context)
            except ArcanaError as exc:
                code = status_for(exc)
                if code is grpc.StatusCode.INTERNAL:
                    log.error("internal error in %s", method, exc_info=exc)
                await context.abort(code, message_for(exc))
            except (asyncio.CancelledError, grpc.aio.AbortError, TimeoutError):
                raise
            except Exception:
                log.exception("unhandled error in %s", method)
                await context.abort(
                    grpc.StatusCode.INTERNAL, "INTERNAL: An unexpected error occurred"
                )

        return handler

    return _UnaryInterceptor(wrap)


def auth_interceptor(
    identity: IdentityService, admin_methods: frozenset[str]
) -> grpc.aio.ServerInterceptor:
    """Same token rules as REST (``services.identity``): writes need an admin bearer in the
    ``authorization`` metadata; reads are public."""

    def wrap(inner: Handler, method: str) -> Handler:
        if _short(method) not in admin_methods:
            return inner

        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            token = None
            for key, value in context.invocation_metadata() or ():
                if key == "authorization" and isinstance(value, str):
                    scheme, _, credentials = value.partition(" ")
                    if scheme.lower() != "bearer" or not credentials.strip():
                        raise Unauthorized("Malformed authorization metadata")
                    token = credentials.strip()
            principal = await identity.authenticate(token)
            if not principal.has_role(Role.ADMIN):
                raise Forbidden(f"Requires role '{Role.ADMIN}'")
            reset = current_principal.set(principal)
            try:
                return await inner(request, context)
            finally:
                current_principal.reset(reset)

        return handler

    return _UnaryInterceptor(wrap)
