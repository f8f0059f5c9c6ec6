"""An in-memory tracer for tests: ``arcana.tracing`` switched on without touching the
process-wide OpenTelemetry provider (which can be set only once per process)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from arcana import tracing


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.set_tracer_for_tests(provider)
    try:
        yield exporter
    finally:
        tracing.reset_for_tests()
        provider.shutdown()


def named(spans: Sequence[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def trace_of(spans: Sequence[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


def everything_recorded(spans: Sequence[ReadableSpan]) -> str:
    """Every name, attribute, event and link attribute of ``spans`` as one text to scan."""
    parts: list[Any] = []
    for s in spans:
        parts.append(s.name)
        parts += [f"{k}={v}" for k, v in (s.attributes or {}).items()]
        for e in s.events:
            parts.append(e.name)
            parts += [f"{k}={v}" for k, v in (e.attributes or {}).items()]
        for link in s.links:
            parts += [f"{k}={v}" for k, v in (link.attributes or {}).items()]
        if s.status.description:
            parts.append(s.status.description)
    return "\n".join(str(p) for p in parts)
