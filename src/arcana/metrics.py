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

# -- plugins --
PLUGIN_CALLS = Counter(
    "arcana_plugin_calls_total",
    "Audit plugin calls by plugin and outcome (ok, flag, error)",
    ["plugin", "outcome"],
)
PLUGIN_DISABLED = Counter(
    "arcana_plugin_disabled_total", "Plugins disabled by the circuit breaker", ["plugin"]
)
PLUGINS_LOADED = Gauge("arcana_plugins", "Plugins in the current set by state", ["state"])
AUDIT_EVENTS = Counter(
    "arcana_audit_events_total", "Audit events processed by outcome (clean, flagged)", ["outcome"]
)
AUDIT_DROPPED = Counter(
    "arcana_audit_events_dropped_total", "Audit events dropped because the queue was full"
)
AUDIT_STORE_ERRORS = Counter(
    "arcana_audit_store_errors_total", "Flagged audit events that could not be stored"
)
AUDIT_QUEUE_DEPTH = Gauge("arcana_audit_queue_depth", "Audit events waiting for the plugins")
