"""Unsampled work skips the SDK, yet the trace goes on and sampling decisions stand.

At 1 % sampling the 99 % unsampled requests and jobs take the fast path of ``arcana.tracing``
(no SDK span); these tests pin what that path must keep: the unsampled trace id travels on
(flags ``00``) and names log lines, nested spans and SQL/Redis hooks stay quiet, a sampled
parent inside unsampled work is still recorded, a sampled root decision is not taken twice,
and a sampler that samples children of unsampled parents still gets its way."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from arcana import tracing

UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def install(sampler: Sampler) -> tuple[InMemorySpanExporter, TracerProvider]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.set_tracer_for_tests(provider)
    return exporter, provider


@pytest.fixture
def uninstall() -> Iterator[list[TracerProvider]]:
    providers: list[TracerProvider] = []
    try:
        yield providers
    finally:
        tracing.reset_for_tests()
        for provider in providers:
            provider.shutdown()


def test_an_unsampled_root_goes_on_as_an_unsampled_trace(
    uninstall: list[TracerProvider],
) -> None:
    exporter, provider = install(ParentBased(ALWAYS_OFF))
    uninstall.append(provider)
    assert tracing._FAST
    with tracing.span("HTTP GET", {"a": 1}, kind="server") as current:
        assert current is None
        traceparent = tracing.current_traceparent()
        assert traceparent is not None
        assert traceparent.startswith("00-")
        assert traceparent.endswith("-00")
        assert tracing.current_traceparent() == traceparent  # one id for the whole block
        assert tracing.log_ids() == (traceparent[3:35], traceparent[36:52])
        assert not tracing.recording()
        with tracing.span("nested") as nested:
            assert nested is None
            assert tracing.current_traceparent() == traceparent
        # A span that is not made current continues the unsampled trace, not a new root.
        loose = tracing.start_span("outbox.publish")
        loose_parent = tracing.traceparent_of(loose)
        assert loose_parent is not None
        assert loose_parent[3:35] == traceparent[3:35]
        assert loose_parent.endswith("-00")
        tracing.end_span(loose)
    assert tracing.current_traceparent() is None
    assert tracing.log_ids() is None
    assert exporter.get_finished_spans() == ()


def test_an_unsampled_parent_is_continued_and_a_sampled_one_inside_it_recorded(
    uninstall: list[TracerProvider],
) -> None:
    exporter, provider = install(ParentBased(ALWAYS_ON))
    uninstall.append(provider)
    assert tracing._FAST
    with tracing.span("job.run", kind="consumer", parent=UNSAMPLED) as current:
        assert current is None
        assert tracing.current_traceparent() == UNSAMPLED
        assert not tracing.recording()
        with tracing.span("mail.send") as nested:
            assert nested is None
        with tracing.span("event.handle", parent=SAMPLED) as sampled:
            assert sampled is not None
            assert sampled.is_recording()
            assert tracing.recording()
            with tracing.span("mail.send") as child:
                assert child is not None
                assert child.is_recording()
        assert tracing.current_traceparent() == UNSAMPLED
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == ["event.handle", "mail.send"]
    assert {s.context.trace_id for s in exporter.get_finished_spans() if s.context} == {
        int(SAMPLED[3:35], 16)
    }


def test_a_sampled_root_decision_is_not_taken_twice(uninstall: list[TracerProvider]) -> None:
    """The SDK is handed the trace id the root decision was taken on: at a ratio of 1/2, about
    half the roots are recorded (a second, independent draw would leave about a quarter)."""
    sampler = TraceIdRatioBased(0.5)
    exporter, provider = install(ParentBased(sampler))
    uninstall.append(provider)
    random.seed(7)
    for _ in range(400):
        with tracing.span("root"):
            pass
    recorded = exporter.get_finished_spans()
    assert 160 <= len(recorded) <= 240
    for s in recorded:
        assert s.context is not None
        assert s.context.trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < sampler.bound


def test_a_sampler_that_samples_children_of_unsampled_parents_keeps_the_sdk_path(
    uninstall: list[TracerProvider],
) -> None:
    exporter, provider = install(TraceIdRatioBased(0.5))  # not parent-based
    uninstall.append(provider)
    assert not tracing._FAST
    low = "00-00000000000000000000000000000001-b7ad6b7169203331-00"  # sampled by its trace id
    with tracing.span("job.run", parent=low) as current:
        assert current is not None
        assert current.is_recording()
    assert [s.name for s in exporter.get_finished_spans()] == ["job.run"]


def test_the_workers_unsampled_entry_continues_only_well_formed_unsampled_parents(
    uninstall: list[TracerProvider],
) -> None:
    exporter, provider = install(ParentBased(ALWAYS_ON))
    uninstall.append(provider)
    token = tracing.enter_unsampled(UNSAMPLED)
    assert token is not None
    try:
        assert tracing.current_traceparent() == UNSAMPLED
        assert tracing.log_ids() == (UNSAMPLED[3:35], UNSAMPLED[36:52])
        assert not tracing.recording()
        with tracing.span("mail.send") as nested:
            assert nested is None
    finally:
        tracing.leave_unsampled(token)
    assert tracing.current_traceparent() is None
    # Sampled, malformed, upper-case, all-zero or absent parents are left to ``span``.
    for parent in (
        SAMPLED,
        None,
        "",
        UNSAMPLED.upper(),
        UNSAMPLED.replace("-", "_"),
        "01" + UNSAMPLED[2:],
        UNSAMPLED[:3] + "0" * 32 + UNSAMPLED[35:],
        UNSAMPLED[:36] + "0" * 16 + UNSAMPLED[52:],
        UNSAMPLED[:10] + "g" + UNSAMPLED[11:],
        UNSAMPLED + "0",
    ):
        assert tracing.enter_unsampled(parent) is None, parent
    assert exporter.get_finished_spans() == ()
