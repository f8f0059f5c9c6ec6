"""What every unary call goes through, outermost first: tracing span → metrics → request id
(logging) → deadline → error mapping → auth (writes) → malformed-request check → servicer.

These are not ``grpc.aio.ServerInterceptor``s: with any interceptor installed, grpc.aio awaits
``intercept_service`` (and a continuation chain) on every call just to find the handler, and a
handler wrapped layer by layer costs one coroutine per layer per call. Instead ``Instrumented``
stands in for the server while the services register: each unary-unary handler is replaced
once, at registration, by one handler that does all of the above inline with its method's
metric children, name and auth rule already looked up. Streaming methods (reflection, health's
``Watch``) pass through unchanged, as they did through the interceptors. The principal reaches
the servicer through a context variable.

Every method is found through one generic handler (``_Lookup``), none is registered with
grpc.aio as a "registered method". To find a handler grpc has already copied the call's
metadata out of grpc core (``HandlerCallDetails.invocation_metadata``); the generic handler
hands that copy to the call's handler, bound to it for this call only, so the handler does not
copy it a second time (``context.invocation_metadata()`` builds a new tuple on every read). A
registered method is looked up without the call details, so it would have to. Registering also
costs every call of any method: grpc.aio waits on one pending request per registered method
for each call it accepts.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from arcana import tracing
from arcana.domain.identity import Principal, Role
from arcana.errors import ArcanaError, Forbidden, Unauthorized, ValidationFailed
from arcana.log import REQUEST_ID
from arcana.metrics import GRPC_CALLS
from arcana.request_ids import new_request_id
from arcana.rpc.errors import message_for, status_for
from arcana.services.identity import IdentityService

log = logging.getLogger("arcana.rpc")

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Metadata = Sequence[tuple[str, Any]]
# ``instrument``'s handler: the call's metadata, the request's bytes, the servicer context.
InstrumentedHandler = Callable[[Metadata, bytes, grpc.aio.ServicerContext], Awaitable[Any]]

current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "grpc_principal", default=None
)

# Status codes that are the client's doing: not logged, not a span error.
_QUIET = frozenset({"OK", "NOT_FOUND", "INVALID_ARGUMENT"})
_NOT_SPAN_ERRORS = frozenset({"OK", "NOT_FOUND", "INVALID_ARGUMENT", "ALREADY_EXISTS"})
_perf_counter = time.perf_counter
_UNTRACED = object()  # ``handler`` called by grpc, not yet inside a span


def _short(method: str) -> str:
    return method.rsplit("/", 1)[-1]


class Malformed:
    """Stands for a request whose bytes are not a valid message of the method's type."""

    def __init__(self, error: str) -> None:
        self.error = error


def _malformed(request: Malformed) -> ValidationFailed:
    return ValidationFailed(f"The request is not a valid protobuf message ({request.error})")


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


def _bearer(metadata: Metadata) -> str | None:
    """The token of the ``authorization`` metadata (the last one wins), ``None`` if absent."""
    token = None
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            scheme, _, credentials = value.partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                raise Unauthorized("Malformed authorization metadata")
            token = credentials.strip()
    return token


def instrument(
    behaviour: Handler,
    method: str,
    identity: IdentityService,
    admin_methods: frozenset[str],
    deserializer: Callable[[bytes], Any] | None = None,
    serializer: Callable[[Any], bytes] | None = None,
) -> InstrumentedHandler:
    """``behaviour`` (a unary-unary servicer method) with every layer of the module docstring,
    built once per method. The handler returned takes the call's metadata and the request's
    bytes, parses them with ``deserializer`` itself and answers the response serialized with
    ``serializer`` (as it is without one). Bytes that are not a valid message become a
    ``Malformed`` (grpc would answer UNKNOWN and log a trace when its own deserializing fails;
    this way the client gets INVALID_ARGUMENT).

    A call of a method open to all costs one coroutine besides the servicer's: the parsing,
    error mapping, deadline and metrics are inline in ``handler``, which awaits the servicer's
    coroutine directly; only admin methods await ``authorized`` in between. Each layer was a
    coroutine or a Python call of its own; what the layers cost a cached ``GetProduct`` in
    event-loop time is measured in ``bench/RESULTS.md`` (issue 16, sixth pass)."""
    name = _short(method)
    span_name = f"grpc {method}"
    span_attributes = {"rpc.system": "grpc", "rpc.method": name}
    record = GRPC_CALLS.method(name).record

    async def authorized(
        request: Any, context: grpc.aio.ServicerContext, metadata: Metadata
    ) -> Any:
        """An admin method: the bearer checked first, malformed bytes refused after that."""
        principal = await identity.authenticate(_bearer(metadata))
        if not principal.has_role(Role.ADMIN):
            raise Forbidden(f"Requires role '{Role.ADMIN}'")
        if isinstance(request, Malformed):
            raise _malformed(request)
        reset = current_principal.set(principal)
        try:
            return await behaviour(request, context)
        finally:
            current_principal.reset(reset)

    admin = name in admin_methods

    async def handler(
        metadata: Metadata,
        data: bytes,
        context: grpc.aio.ServicerContext,
        current: Any = _UNTRACED,
    ) -> Any:
        """Metrics, the request id (from ``x-request-id`` metadata or a new one, echoed in the
        trailing metadata, bound to the log context), the deadline (a call past it stops its
        work: the task is cancelled at the deadline) and errors mapped to status codes. grpc
        calls it with two arguments (``_Lookup`` bound the metadata); with tracing on,
        ``traced`` calls it again inside the span. Written out inline: every Python call on
        this path shows in the event loop's CPU per call."""
        if current is _UNTRACED:
            if tracing.ENABLED:
                return await traced(metadata, data, context)
            current = None
        t0 = _perf_counter()
        exc: BaseException | None = None
        recorded = False  # an abort is counted before grpc sends its status (see below)
        request_id = ""
        for key, value in metadata:
            if key == "x-request-id" and isinstance(value, str) and 0 < len(value) <= 128:
                request_id = value
        request_id = request_id or new_request_id()
        context.set_trailing_metadata((("x-request-id", request_id),))
        bound = REQUEST_ID.set(request_id)
        try:
            try:
                request: Any = data
                if deserializer is not None:
                    try:
                        request = deserializer(data)
                    except Exception as error:
                        request = Malformed(type(error).__name__)
                work: Awaitable[Any]
                if admin:
                    work = authorized(request, context, metadata)
                elif isinstance(request, Malformed):
                    raise _malformed(request)
                else:
                    work = behaviour(request, context)
                remaining = context.time_remaining()
                if remaining is None:
                    response = await work
                    return response if serializer is None else serializer(response)
                try:
                    async with asyncio.timeout(max(remaining, 0.0)):
                        response = await work
                    return response if serializer is None else serializer(response)
                except TimeoutError:
                    # grpc.aio's abort sends the status before it raises: the call is counted
                    # first, so a client that has its answer also finds it in the metrics.
                    record("DEADLINE_EXCEEDED", _perf_counter() - t0)
                    recorded = True
                    await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded")
            except ArcanaError as error:
                status = status_for(error)
                if status is grpc.StatusCode.INTERNAL:
                    log.error("internal error in %s", method, exc_info=error)
                record(status.name, _perf_counter() - t0)
                recorded = True
                await context.abort(status, message_for(error))
            except (asyncio.CancelledError, grpc.aio.AbortError, TimeoutError):
                raise
            except Exception:
                log.exception("unhandled error in %s", method)
                record("INTERNAL", _perf_counter() - t0)
                recorded = True
                await context.abort(
                    grpc.StatusCode.INTERNAL, "INTERNAL: An unexpected error occurred"
                )
        except BaseException as e:
            exc = e
            raise
        finally:
            code = "OK" if exc is None and context.code() is None else _status_of(context, exc)
            if code not in _QUIET:
                log.info("grpc %s -> %s", method, code, extra={"request_id": request_id})
            REQUEST_ID.reset(bound)
            if not recorded:
                record(code, _perf_counter() - t0)
            if current is not None:
                tracing.set_attributes(current, {"rpc.grpc.status_code": code})
                if code not in _NOT_SPAN_ERRORS:
                    tracing.set_error(current, code)

    async def traced(metadata: Metadata, data: bytes, context: grpc.aio.ServicerContext) -> Any:
        parent = None
        for key, value in metadata:
            if key == "traceparent":
                parent = str(value)[:128]
        with tracing.span(span_name, span_attributes, kind="server", parent=parent) as current:
            return await handler(metadata, data, context, current)

    return handler


class _CallHandler:
    """What grpc.aio reads of a unary-unary method handler (``grpc.RpcMethodHandler``), made
    for one call: ``unary_unary`` is the method's instrumented handler with the call's
    metadata bound to it. The handler parses and serializes itself."""

    __slots__ = ("unary_unary",)
    request_streaming = False
    response_streaming = False
    request_deserializer = None
    response_serializer = None

    def __init__(self, unary_unary: Callable[[bytes, grpc.aio.ServicerContext], Any]) -> None:
        self.unary_unary = unary_unary


class _Lookup(grpc.GenericRpcHandler):  # type: ignore[misc]
    """The server's one generic handler: the instrumented handler of a unary-unary method,
    bound to the call's metadata; a streaming method's handler as its service gave it."""

    def __init__(self, owner: Instrumented) -> None:
        self._owner = owner

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        method = details.method
        handler = self._owner.handlers.get(method)
        if handler is None:
            for generic in self._owner.generic:
                found = generic.service(details)
                if found is not None:
                    if found.unary_unary is None:
                        return found
                    handler = self._owner.wrap(method, found)
                    break
            else:
                return None
        # ``partial`` (not a closure) because grpc.aio tells a coroutine handler from a
        # blocking one with ``inspect.iscoroutinefunction``, which looks through a partial.
        return _CallHandler(functools.partial(handler, details.invocation_metadata or ()))


class Instrumented:
    """Stands for a ``grpc.aio.Server`` while services register (the generated
    ``add_…_to_server`` functions call only the two methods below) and installs ``_Lookup``
    as the server's only generic handler: a service's unary-unary handlers are instrumented
    once (``instrument``), the first time each is found."""

    def __init__(
        self, server: grpc.aio.Server, identity: IdentityService, admin_methods: frozenset[str]
    ) -> None:
        self._identity = identity
        self._admin_methods = admin_methods
        # Instrumented handlers by method; the services' generic handlers, asked in order for
        # any other method.
        self.handlers: dict[str, InstrumentedHandler] = {}
        self.generic: list[grpc.GenericRpcHandler] = []
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, InstrumentedHandler]] = {}
        server.add_generic_rpc_handlers((_Lookup(self),))

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> InstrumentedHandler:
        """The instrumented form of a unary-unary ``handler``, built once per method."""
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = instrument(
            handler.unary_unary,
            method,
            self._identity,
            self._admin_methods,
            handler.request_deserializer,
            handler.response_serializer,
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        """Not registered with grpc (see the module docstring): the unary-unary handlers are
        instrumented now and found by ``_Lookup`` without asking the generic handlers."""
        for name, handler in handlers.items():
            if handler.unary_unary is not None:
                method = f"/{service}/{name}"
                self.handlers[method] = self.wrap(method, handler)
