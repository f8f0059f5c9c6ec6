"""``arcana.loop_metrics``: the exposition is what prometheus-client's own ``Counter`` and
``Histogram`` with the same labels give (but the histogram's ``_created``, which the library's
``HistogramMetricFamily`` does not carry)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from arcana.loop_metrics import CallMetrics, LoopCounter

BUCKETS = (0.001, 0.0025, 0.01, 1)


def _lines(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return sorted(line for line in text.splitlines() if "_created" not in line)


def test_call_metrics_expose_what_a_counter_and_a_histogram_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    calls = CallMetrics(("t_requests", "calls"), ("t_seconds", "latency"), BUCKETS, ours)
    counter = Counter("t_requests_total", "calls", ["method", "code"], registry=theirs)
    histogram = Histogram("t_seconds", "latency", ["method"], buckets=BUCKETS, registry=theirs)
    # On a bound, just past one, past the last, for two methods and two codes.
    observations = [
        ("Get", "OK", 0.001),
        ("Get", "OK", 0.0011),
        ("Get", "NOT_FOUND", 0.0025),
        ("Get", "OK", 7.5),
        ("List", "OK", 0.0),
    ]
    for method, code, seconds in observations:
        calls.method(method).record(code, seconds)
        counter.labels(method, code).inc()
        histogram.labels(method).observe(seconds)
    assert _lines(ours) == _lines(theirs)
    assert ours.get_sample_value("t_seconds_bucket", {"method": "Get", "le": "0.001"}) == 1
    assert ours.get_sample_value("t_seconds_bucket", {"method": "Get", "le": "+Inf"}) == 4
    assert ours.get_sample_value("t_requests_total", {"method": "Get", "code": "OK"}) == 3


def test_a_method_has_one_recorder() -> None:
    calls = CallMetrics(("u_requests", "calls"), ("u_seconds", "latency"), BUCKETS, None)
    assert calls.method("Get") is calls.method("Get")


def test_loop_counter_exposes_what_a_counter_would_with_children_at_zero() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = LoopCounter("v_lookups_total", "look-ups", ["cache", "result"], ours)
    reference = Counter("v_lookups_total", "look-ups", ["cache", "result"], registry=theirs)
    hit, miss = counter.incrementer("product", "hit"), counter.incrementer("product", "miss")
    reference.labels("product", "miss")  # a child created, never incremented
    for _ in range(3):
        hit()
        reference.labels("product", "hit").inc()
    assert _lines(ours) == _lines(theirs)
    assert miss is not hit
    assert ours.get_sample_value("v_lookups_total", {"cache": "product", "result": "miss"}) == 0
    # A second incrementer of the same child adds to the same count.
    counter.incrementer("product", "hit")()
    assert ours.get_sample_value("v_lookups_total", {"cache": "product", "result": "hit"}) == 4
    # Label values must match the label names, as ``Counter.labels`` insists.
    with pytest.raises(ValueError, match="expected labels"):
        counter.incrementer("product")
