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
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
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

AttrValue = str | bool | int | float
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
    global ENABLED, _tracer, _provider
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
    _provider = provider
    _tracer = provider.get_tracer("arcana")
    _bind_current_span()
    ENABLED = True
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
    global ENABLED, _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("arcana")
    _bind_current_span()
    ENABLED = True


def _bind_current_span() -> None:
    global _current_span
    from opentelemetry.trace import get_current_span

    _current_span = get_current_span


def recording() -> bool:
    """Whether the current span is being recorded (tracing on and this trace sampled).

    Child-only spans (SQL statements, Redis commands) are made only inside a recorded span:
    under a parent-based sampler a child of an unsampled or absent parent is never exported,
    yet building it costs nearly what a recorded span costs, which at 1 % sampling would be
    most of tracing's price."""
    return ENABLED and bool(_current_span().is_recording())


def reset_for_tests() -> None:
    global ENABLED, _tracer, _provider
    ENABLED = False
    _tracer = None
    _provider = None


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


def _clean(attributes: Mapping[str, AttrValue | None] | None) -> dict[str, AttrValue]:
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
    attributes: Mapping[str, AttrValue | None] | None = None,
    *,
    kind: str = "internal",
    parent: str | None = None,
    links: Sequence[str | None] = (),
) -> contextlib.AbstractContextManager[Span | None]:
    """A span as the current one for the ``with`` block, or a shared null context when tracing
    is off. ``parent`` is a stored ``traceparent`` to continue; ``links`` are traceparents of
    the traces a batch joins. Exceptions are recorded and the status set to error."""
    if not ENABLED:
        return NULL_SPAN
    return _span(name, attributes, kind, parent, links)


@contextlib.contextmanager
def _span(
    name: str,
    attributes: Mapping[str, AttrValue | None] | None,
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
        yield current


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
    from opentelemetry.trace import get_current_span

    ctx = get_current_span().get_span_context()
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
    from opentelemetry.trace import get_current_span

    ctx = get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
