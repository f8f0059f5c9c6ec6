"""Prometheus metrics, all prefixed ``arcana_``. Defined once per process at import time:
the prometheus client keeps a process-wide registry, and that is what ``/metrics`` serves."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "arcana_http_requests_total",
    "HTTP requests by route template and status",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "arcana_http_request_duration_seconds",
    "HTTP request latency by route template",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CACHE_REQUESTS = Counter("arcana_cache_requests_total", "Cache look-ups", ["cache", "result"])
CACHE_ERRORS = Counter("arcana_cache_errors_total", "Cache backend errors (degraded to a miss)")
DB_UNAVAILABLE = Counter(
    "arcana_db_unavailable_total", "Requests answered 503 because the database was unreachable"
)
BUILD_INFO = Gauge("arcana_build_info", "Build information", ["version"])

# -- events --
OUTBOX_RELAYED = Counter(
    "arcana_outbox_relayed_total", "Outbox rows delivered by the relay", ["kind"]
)
OUTBOX_RELAY_ERRORS = Counter(
    "arcana_outbox_relay_errors_total", "Relay passes that failed (retried with backoff)"
)
OUTBOX_COMMIT_TO_PUBLISH = Histogram(
    "arcana_outbox_commit_to_publish_seconds",
    "Time from recording an outbox row to delivering it",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
EVENTS_HANDLED = Counter(
    "arcana_events_handled_total", "Domain events handled", ["event_type", "result"]
)
EVENTS_DEAD = Counter("arcana_events_dead_total", "Events or outbox rows given up on", ["stage"])
EVENTS_STREAM_CLIENTS = Gauge(
    "arcana_events_stream_clients", "Open Server-Sent Events streams of domain events"
)
