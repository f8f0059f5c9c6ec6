"""Per-call counters and latency histograms kept by the event loop thread alone, exported to
Prometheus by a collector at scrape time.

Why not prometheus-client's ``Counter``/``Histogram`` children here: every ``inc`` and
``observe`` takes a lock and goes through several Python calls (a histogram's observation is
two locked increments and a scan of its buckets), which was a measurable share of a cached gRPC
``GetProduct`` (``bench/grpc.py``, issue 16). Calls that are only ever recorded from the event
loop's thread need no lock: ``CallMetrics.record`` is plain integer arithmetic, and the
exposition (names, labels, buckets, ``_count``/``_sum``) is the library's own, built by its
``CounterMetricFamily``/``HistogramMetricFamily`` when ``/metrics`` is read.

A scrape from another thread may see one call counted and its latency not yet summed (or the
reverse); Prometheus rates over scrapes make no difference of that.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import cast

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

# The library's own bucket-label formatting (``le="0.001"``, ``"+Inf"``); it has no annotations.
_go_float = cast(Callable[[float], str], floatToGoString)


class MethodCalls:
    """One method's calls: a count per status code, latency buckets and their sum. Record from
    the event loop's thread only (no lock)."""

    __slots__ = ("_bounds", "buckets", "codes", "created", "total_seconds")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.codes: dict[str, int] = {}
        self.buckets = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total_seconds = 0.0
        self.created = time.time()

    def record(self, code: str, seconds: float) -> None:
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        # ``le`` buckets: the first bound >= seconds (past the last one: +Inf).
        self.buckets[bisect_left(self._bounds, seconds)] += 1
        self.total_seconds += seconds


class CallMetrics(Collector):
    """A ``<requests>_total{method,code}`` counter and a ``<latency>{method}`` histogram, as
    prometheus-client's ``Counter`` and ``Histogram`` with those labels would expose them."""

    def __init__(
        self,
        requests: tuple[str, str],
        latency: tuple[str, str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self._requests = requests
        self._latency = latency
        self._bounds = tuple(float(b) for b in buckets)
        self._methods: dict[str, MethodCalls] = {}
        if registry is not None:
            registry.register(self)

    def method(self, name: str) -> MethodCalls:
        """The recorder of ``name``'s calls (the same one each time)."""
        calls = self._methods.get(name)
        if calls is None:
            calls = self._methods[name] = MethodCalls(self._bounds)
        return calls

    def _families(self) -> tuple[CounterMetricFamily, HistogramMetricFamily]:
        name, doc = self._requests
        counter = CounterMetricFamily(name, doc, labels=["method", "code"])
        name, doc = self._latency
        return counter, HistogramMetricFamily(name, doc, labels=["method"])

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterator[Metric]:
        counter, histogram = self._families()
        for method, calls in list(self._methods.items()):
            for code, n in list(calls.codes.items()):
                counter.add_metric([method, code], n, created=calls.created)
            cumulative, buckets = 0, []
            counts = list(calls.buckets)
            for bound, n in zip((*self._bounds, float("inf")), counts, strict=True):
                cumulative += n
                buckets.append((_go_float(bound), cumulative))
            histogram.add_metric([method], buckets, calls.total_seconds)
        yield counter
        yield histogram


class LoopCounter(Collector):
    """A counter with labels, as prometheus-client's ``Counter`` exposes it, whose children are
    incremented from the event loop's thread only (``incrementer``)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self._name = name.removesuffix("_total")
        self._documentation = documentation
        self._labels = list(labels)
        self._cells: dict[tuple[str, ...], tuple[list[int], float]] = {}
        if registry is not None:
            registry.register(self)

    def incrementer(self, *values: str) -> Callable[[], None]:
        """A function that adds one to the child of these label values (created at 0 now)."""
        if len(values) != len(self._labels):
            raise ValueError(f"{self._name}: expected labels {self._labels}, got {values}")
        known = self._cells.get(values)
        if known is None:
            known = self._cells[values] = ([0], time.time())
        cell = known[0]

        def inc() -> None:
            cell[0] += 1

        return inc

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self._name, self._documentation, labels=self._labels)

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, (cell, created) in list(self._cells.items()):
            family.add_metric(list(values), cell[0], created=created)
        yield family
