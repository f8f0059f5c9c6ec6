"""OpenTelemetry tracing, off unless an OTLP endpoint is configured.

Switched on by ``configure_tracing`` when ``ARCANA_OTEL_ENDPOINT`` or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (and
``OTEL_SDK_DISABLED`` is not true). The SDK then reads the other standard ``OTEL_*`` variables
itself: ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` /
``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_*``...

When tracing is off every hook in this module returns after one check of the module-level
``ENABLED`` flag, and the SDK is never imported: hot paths pay a global lookup, not a no-op
span. Call sites on hot paths test ``tracing.ENABLED`` before building attributes.

The trace context travels with the work as a W3C ``traceparent`` string: stored in the outbox
row, carried as an extra ``traceparent`` field of the stream entry and stored with the job.
Only ``traceparent`` is carried (``tracestate`` is dropped): one short column, and no vendor
state of ours needs it.

Unsampled work short-circuits the SDK. When the sampler leaves the children of unsampled
parents unsampled (the default ``parentbased_*`` samplers do; probed once when tracing is
installed), a span whose stored parent is not sampled, or a root span the sampler drops, is not
an SDK span at all: the trace is only remembered in a context variable (``_STATE``), so nested
spans return at once, ``current_traceparent`` hands the unsampled trace on to the work it
causes, and log lines still carry its ids. A root decision is taken by asking the configured
sampler about a freshly drawn trace id before anything else is built; when it samples, the SDK
is given that very trace id (``_PresetIds``), so the decision stands. Samplers are asked with
the span's name and kind only (no attributes or links), which is all the standard ones read.
At 1 % sampling this keeps the price of the 99 % unsampled requests and jobs to a context
variable and one sampler call (``bench/tracing.py --callgrind``).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

ENABLED = False
"""True once ``configure_tracing`` installed a tracer provider."""

_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_current_span: Any = None  # opentelemetry.trace.get_current_span, bound once tracing is on
_sampler: Any = None  # the tracer's sampler, asked for root decisions on the fast path
_ids: Any = None  # the tracer's id generator (a _PresetIds) on the fast path
_FAST = False
"""Unsampled work bypasses the SDK (the sampler drops children of unsampled parents)."""

AttrValue = str | bool | int | float
Attributes = Mapping[str, AttrValue | None]
LazyAttributes = Attributes | Callable[[], Attributes] | None
"""Span attributes, or a function that builds them: called only if the span is recorded."""
NULL_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()
"""What ``span`` returns when tracing is off; hot paths use it directly behind an
``ENABLED`` test so not even the span's arguments are built."""

# Attribute keys that may never be recorded, whatever a call site passes (defence in depth:
# call sites only pass ids, types and counts).
_SECRET_WORDS = ("password", "token", "secret", "authorization", "cookie")


def endpoint_from_env(arcana_endpoint: str | None) -> str | None:
    """The OTLP/HTTP base URL that turns tracing on, or ``None`` (tracing off)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    for value in (
        arcana_endpoint,
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ):
        if value and value.strip():
            return value.strip()
    return None


def configure_tracing(
    arcana_endpoint: str | None,
    *,
    service_name: str = "arcana",
    exporter: SpanExporter | None = None,
    sampler: Any = None,
    batch: bool = True,
) -> bool:
    """Install the SDK tracer provider if an endpoint is set (or ``exporter`` is given, for
    tests and benchmarks). Returns whether tracing is on. Idempotent per process."""
    if ENABLED:
        return True
    endpoint = endpoint_from_env(arcana_endpoint)
    if endpoint is None and exporter is None:
        return False
    # Imported here so processes with tracing off never load the SDK.
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        assert endpoint is not None
        exporter = OTLPSpanExporter(endpoint=_traces_url(arcana_endpoint, endpoint))
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name}
    )
    # ``sampler=None`` lets the SDK read OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG
    # (default: parentbased_always_on).
    provider = TracerProvider(resource=resource, sampler=sampler)
    provider.add_span_processor(
        BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    )
    trace.set_tracer_provider(provider)
    _install(provider)
    return True


def _traces_url(arcana_endpoint: str | None, endpoint: str) -> str | None:
    """``ARCANA_OTEL_ENDPOINT`` is a collector base URL (``/v1/traces`` is appended unless it
    already ends so); ``None`` lets the exporter apply the standard ``OTEL_*`` rules."""
    if arcana_endpoint and arcana_endpoint.strip() == endpoint:
        base = endpoint.rstrip("/")
        return base if base.endswith("/v1/traces") else base + "/v1/traces"
    return None


def shutdown_tracing() -> None:
    """Flush and stop the exporter (process exit, or between tests)."""
    global ENABLED, _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    ENABLED = False
    _tracer = None
    _provider = None


def force_flush(timeout_ms: int = 5000) -> None:
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def set_tracer_for_tests(provider: TracerProvider) -> None:
    """Use ``provider`` (with an in-memory exporter) without touching the global provider,
    which OpenTelemetry lets a process set only once."""
    _install(provider)


def _install(provider: TracerProvider) -> None:
    global ENABLED, _tracer, _provider, _current_span, _sampler, _ids, _FAST
    from opentelemetry.sdk.trace import Tracer as SdkTracer
    from opentelemetry.trace import get_current_span

    tracer = provider.get_tracer("arcana")
    _provider = provider
    _tracer = tracer
    _current_span = get_current_span
    _FAST = isinstance(tracer, SdkTracer) and _drops_unsampled_children(tracer.sampler)
    if _FAST:
        assert isinstance(tracer, SdkTracer)
        _sampler = tracer.sampler
        _ids = tracer.id_generator = _preset_ids(tracer.id_generator)
    ENABLED = True


def _drops_unsampled_children(sampler: Any) -> bool:
    """Whether ``sampler`` leaves every child of an unsampled parent (remote or local)
    unsampled, whatever its trace id: the condition for skipping such children entirely."""
    from opentelemetry.trace import (
        NonRecordingSpan,
        SpanContext,
        TraceFlags,
        set_span_in_context,
    )

    for remote in (True, False):
        for trace_id in (1, 2**128 - 1):
            parent = SpanContext(trace_id, 1, is_remote=remote, trace_flags=TraceFlags(0))
            context = set_span_in_context(NonRecordingSpan(parent))
            if sampler.should_sample(context, trace_id, "probe").decision.is_recording():
                return False
    return True


def _preset_ids(inner: Any) -> Any:
    """An id generator that hands the SDK the trace id a root decision was taken on."""
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class PresetIds(IdGenerator):
        def __init__(self) -> None:
            self.inner = inner
            self.local = threading.local()

        def preset(self, trace_id: int) -> None:
            self.local.trace_id = trace_id

        def generate_trace_id(self) -> int:
            preset: int | None = getattr(self.local, "trace_id", None)
            if preset is not None:
                self.local.trace_id = None
                return preset
            return int(self.inner.generate_trace_id())

        def generate_span_id(self) -> int:
            return int(self.inner.generate_span_id())

        def is_trace_id_random(self) -> bool:
            return bool(self.inner.is_trace_id_random())

    return PresetIds()


def recording() -> bool:
    """Whether the current span is being recorded (tracing on and this trace sampled).

    Child-only spans (SQL statements, Redis commands) are made only inside a recorded span:
    under a parent-based sampler a child of an unsampled or absent parent is never exported,
    yet building it costs nearly what a recorded span costs, which at 1 % sampling would be
    most of tracing's price."""
    if not ENABLED:
        return False
    state = _STATE.get()
    if state is None or state.__class__ is _Unsampled:
        return False  # no span of ours is current, or its trace is not sampled
    return bool(_current_span().is_recording())


def reset_for_tests() -> None:
    global ENABLED, _tracer, _provider, _FAST, _sampler, _ids
    ENABLED = False
    _FAST = False
    _tracer = None
    _provider = None
    _sampler = None
    _ids = None


# -- unsampled work ----------------------------------------------------------------------------
class _Unsampled:
    """The current work belongs to an unsampled trace; no SDK span exists for it.

    Entered as a context manager (yields ``None``, like a span that is off). Keeps the trace's
    ids so the work it causes carries the trace on (flags ``00``) and log lines name it."""

    __slots__ = ("_span_id", "_token", "_trace_id", "_traceparent")

    def __init__(self, traceparent: str | None = None, trace_id: int | None = None) -> None:
        self._traceparent = traceparent
        self._trace_id = trace_id
        self._span_id: int | None = None
        self._token: contextvars.Token[object] | None = None

    @property
    def trace_id(self) -> int:
        if self._trace_id is None:
            assert self._traceparent is not None
            self._trace_id = int(self._traceparent[3:35], 16)
        return self._trace_id

    @property
    def span_id(self) -> int:
        if self._span_id is None:
            if self._traceparent is not None:
                self._span_id = int(self._traceparent[36:52], 16)
            else:
                self._span_id = int(_ids.generate_span_id())
        return self._span_id

    @property
    def traceparent(self) -> str:
        if self._traceparent is None:
            self._traceparent = f"00-{self.trace_id:032x}-{self.span_id:016x}-00"
        return self._traceparent

    def __enter__(self) -> None:
        self._token = _STATE.set(self)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _STATE.reset(self._token)
            self._token = None


_SDK_SPAN = object()
"""``_STATE`` value while a span of the SDK is current (sampled, or the fast path is off)."""

_STATE: contextvars.ContextVar[object] = contextvars.ContextVar("arcana_trace", default=None)
"""``None`` (no span of ours), ``_SDK_SPAN``, or the ``_Unsampled`` trace of the current work."""

# A version-00 ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``, lower case) is the only
# form the fast path reads; others go to the SDK.
_HEX = "0123456789abcdef"
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_EVEN_HEX = frozenset("02468ace")


# -- spans -------------------------------------------------------------------------------------
_ALLOWED_KEYS: dict[str, bool] = {}
"""Attribute key -> may be recorded. Call sites use a small fixed set of keys, so the secret
check runs once per key, not once per span."""


def _allowed(key: str) -> bool:
    ok = _ALLOWED_KEYS.get(key)
    if ok is None:
        ok = not any(w in key.lower() for w in _SECRET_WORDS)
        if len(_ALLOWED_KEYS) < 1024:
            _ALLOWED_KEYS[key] = ok
    return ok


def _clean(attributes: LazyAttributes) -> dict[str, AttrValue]:
    if callable(attributes):
        attributes = attributes()
    if not attributes:
        return {}
    return {k: v for k, v in attributes.items() if v is not None and _allowed(k)}


_KINDS: dict[str, Any] = {}


def _kind(name: str) -> Any:
    if not _KINDS:
        from opentelemetry.trace import SpanKind

        _KINDS.update(
            internal=SpanKind.INTERNAL,
            server=SpanKind.SERVER,
            client=SpanKind.CLIENT,
            producer=SpanKind.PRODUCER,
            consumer=SpanKind.CONSUMER,
        )
    return _KINDS[name]


def span(
    name: str,
    attributes: LazyAttributes = None,
    *,
    kind: str = "internal",
    parent: str | None = None,
    links: Sequence[str | None] = (),
) -> contextlib.AbstractContextManager[Span | None]:
    """A span as the current one for the ``with`` block, or a shared null context when tracing
    is off. ``parent`` is a stored ``traceparent`` to continue; ``links`` are traceparents of
    the traces a batch joins. Exceptions are recorded and the status set to error.
    ``attributes`` may be a function, so unsampled work does not even build them."""
    if not ENABLED:
        return NULL_SPAN
    if _FAST:
        if parent:
            if _unsampled_parent(parent):
                return _Unsampled(parent)
        else:
            state = _STATE.get()
            if state is None:  # a root span: ask the sampler before building anything
                trace_id = _ids.generate_trace_id()
                decision = _sampler.should_sample(_root_context(), trace_id, name, _kind(kind))
                if not decision.decision.is_recording():
                    return _Unsampled(trace_id=trace_id)
                _ids.preset(trace_id)
            elif state.__class__ is _Unsampled:
                return NULL_SPAN  # the current trace is not sampled: neither is this child
    return _span(name, attributes, kind, parent, links)


def _unsampled_parent(parent: str) -> bool:
    """Whether ``parent`` is a well-formed version-00 ``traceparent`` whose flags say "not
    sampled" (checked from the cheapest test on). ``str.lstrip`` of the hex digits leaves
    nothing of a hex field: the same test as a regular expression at a third of its price."""
    return (
        len(parent) == 55
        and parent[54] in _EVEN_HEX  # flags without the sampled bit
        and parent[53] in _HEX
        and parent[:3] == "00-"
        and parent[35] == "-"
        and parent[52] == "-"
        and not parent[3:35].lstrip(_HEX)
        and not parent[36:52].lstrip(_HEX)
        and parent[3:35] != _ZERO_TRACE
        and parent[36:52] != _ZERO_SPAN
    )


def enter_unsampled(parent: str | None) -> contextvars.Token[object] | None:
    """Continue ``parent`` without a span if its trace is not sampled (and the fast path is
    on): the unsampled trace becomes the current one, as ``span(..., parent=parent)`` would
    make it, and the token to hand to ``leave_unsampled`` is returned. ``None`` means "not
    unsampled": make the span with ``span``.

    For the hottest consumer, the worker's ``job.run``: 99 % of jobs at 1 % sampling take this
    path, and it skips what ``span`` costs around it (the call, a context manager object with
    ``__enter__``/``__exit__``, the span's name and attribute function), about 10,000
    instructions per job (``bench/tracing.py --callgrind``)."""
    if _FAST and parent and _unsampled_parent(parent):
        return _STATE.set(_Unsampled(parent))
    return None


def leave_unsampled(token: contextvars.Token[object]) -> None:
    """End what ``enter_unsampled`` began."""
    _STATE.reset(token)


_ROOT: list[Any] = []


def _root_context() -> Any:
    """An empty OpenTelemetry context: what a root span's sampler is asked with."""
    if not _ROOT:
        from opentelemetry.context import Context

        _ROOT.append(Context())
    return _ROOT[0]


@contextlib.contextmanager
def _span(
    name: str,
    attributes: LazyAttributes,
    kind: str,
    parent: str | None,
    links: Sequence[str | None],
) -> Iterator[Span | None]:
    assert _tracer is not None
    context = extract(parent) if parent else None
    link_objs = None
    if links:
        from opentelemetry.trace import Link, get_current_span

        link_objs = []
        for tp in dict.fromkeys(t for t in links if t):
            ctx = get_current_span(extract(tp)).get_span_context()
            if ctx.is_valid:
                link_objs.append(Link(ctx))
    with _tracer.start_as_current_span(
        name,
        context=context,
        kind=_kind(kind),
        attributes=_clean(attributes),
        links=link_objs,
    ) as current:
        token = _STATE.set(_SDK_SPAN)
        try:
            yield current
        finally:
            _STATE.reset(token)


def start_span(
    name: str,
    attributes: Mapping[str, AttrValue | None] | None = None,
    *,
    kind: str = "internal",
    parent: str | None = None,
) -> Span | None:
    """A span that is not made current (for several open at once); end it with ``end_span``."""
    if not ENABLED:
        return None
    assert _tracer is not None
    if not parent:
        state = _STATE.get()
        if state.__class__ is _Unsampled:
            assert isinstance(state, _Unsampled)
            parent = state.traceparent  # continue the unsampled trace, not a new root
    return _tracer.start_span(
        name,
        context=extract(parent) if parent else None,
        kind=_kind(kind),
        attributes=_clean(attributes),
    )


def end_span(current: Span | None, error: BaseException | None = None) -> None:
    if current is None:
        return
    if error is not None:
        current.record_exception(error)
        set_error(current, type(error).__name__)
    current.end()


def traceparent_of(current: Span | None) -> str | None:
    if current is None:
        return None
    ctx = current.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def set_attributes(current: Span | None, attributes: Mapping[str, AttrValue | None]) -> None:
    if current is not None:
        current.set_attributes(_clean(attributes))


def set_error(current: Span | None, description: str) -> None:
    if current is not None:
        from opentelemetry.trace import Status, StatusCode

        current.set_status(Status(StatusCode.ERROR, description[:200]))


# -- propagation -------------------------------------------------------------------------------
def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or ``None`` (tracing off, or no span)."""
    if not ENABLED:
        return None
    state = _STATE.get()
    if state.__class__ is _Unsampled:
        assert isinstance(state, _Unsampled)
        return state.traceparent
    ctx = _current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def extract(traceparent: str) -> Any:
    """An OpenTelemetry ``Context`` whose parent is ``traceparent`` (empty if malformed)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def log_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` in hex for the current span, for log lines."""
    if not ENABLED:
        return None
    state = _STATE.get()
    if state.__class__ is _Unsampled:
        assert isinstance(state, _Unsampled)
        return f"{state.trace_id:032x}", f"{state.span_id:016x}"
    ctx = _current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
