"""Prometheus metrics, all prefixed ``arcana_``. Defined once per process at import time:
the prometheus client keeps a process-wide registry, and that is what ``/metrics`` serves."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from arcana.loop_metrics import CallMetrics, LoopCounter

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
# Counted on the event loop's thread by the product cache, on every cached read
# (``arcana.loop_metrics``).
CACHE_REQUESTS = LoopCounter("arcana_cache_requests_total", "Cache look-ups", ["cache", "result"])
CACHE_ERRORS = Counter("arcana_cache_errors_total", "Cache backend errors (degraded to a miss)")
DB_UNAVAILABLE = Counter(
    "arcana_db_unavailable_total", "Requests answered 503 because the database was unreachable"
)
BUILD_INFO = Gauge("arcana_build_info", "Build information", ["version"])

# -- auth --
AUTH_LOGINS = Counter("arcana_auth_logins_total", "Login attempts by result", ["result"])
AUTH_REFRESH_REUSE = Counter(
    "arcana_auth_refresh_reuse_total", "Rotated-away refresh tokens presented (family revoked)"
)
LOGIN_LIMITER_ERRORS = Counter(
    "arcana_login_limiter_errors_total",
    "Attempt limiter backend errors (counted in the process instead)",
)
PASSWORD_HASHES = Counter(
    "arcana_password_hashes_total", "Argon2 operations started, by kind", ["op"]
)
PASSWORD_SLOTS_BUSY = Counter(
    "arcana_password_slots_busy_total",
    "Password operations refused (503) because every hashing slot stayed busy",
    ["op"],
)
# -- jobs --
JOBS_DEPTH = Gauge("arcana_jobs_queue_depth", "Jobs ready to run, by priority", ["priority"])
JOBS_WAITING = Gauge("arcana_jobs_waiting", "Jobs waiting for their time", ["status"])
JOBS_RUNNING = Gauge("arcana_jobs_running", "Jobs running in this process")
JOBS_DEAD = Gauge("arcana_jobs_dead", "Jobs in the dead-letter set")
JOBS_PROCESSED = Counter("arcana_jobs_processed_total", "Job attempts that succeeded", ["job_type"])
JOBS_FAILED = Counter("arcana_jobs_failed_total", "Job attempts that failed", ["job_type"])
JOBS_RETRIED = Counter("arcana_jobs_retried_total", "Failed attempts rescheduled", ["job_type"])
JOBS_DEAD_LETTERED = Counter(
    "arcana_jobs_dead_lettered_total", "Jobs moved to the dead-letter set", ["job_type"]
)
JOBS_DURATION = Histogram(
    "arcana_job_duration_seconds",
    "Handler run time",
    ["job_type"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600),
)
JOBS_LATENCY = Histogram(
    "arcana_job_start_latency_seconds",
    "Time from when a job was due (enqueue or scheduled time) to the start of its attempt",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)
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
PLUGIN_RECYCLED = Counter(
    "arcana_plugin_instances_recycled_total",
    "Instances of plugins without dealloc replaced as their memory neared the cap",
    ["plugin"],
)
PLUGIN_OUTPUT_DROPPED = Counter(
    "arcana_plugin_output_dropped_bytes_total",
    "Bytes a plugin wrote to stdout/stderr past the per-call log bound",
    ["plugin"],
)
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
# -- products / gRPC --
# Recorded by the gRPC handlers on the event loop's thread, without prometheus-client's locks
# (``arcana.loop_metrics``); exposed as a Counter and a Histogram with these labels would be.
GRPC_CALLS = CallMetrics(
    requests=("arcana_grpc_requests", "gRPC calls by method and status code"),
    latency=("arcana_grpc_request_duration_seconds", "gRPC call latency by method"),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_STREAM_CLIENTS = Gauge(
    "arcana_events_stream_clients", "Open Server-Sent Events streams of domain events"
)
# -- observability (gauges are set by arcana.adapters.metrics_sampler) --
JOBS_QUEUE_JOBS = Gauge(
    "arcana_jobs_queue_jobs",
    "Jobs in the queue by status and priority (running and dead counted under priority 'all')",
    ["status", "priority"],
)
JOBS_OLDEST_QUEUED_AGE = Gauge(
    "arcana_jobs_oldest_queued_age_seconds",
    "Age of the oldest job ready to run (0 when none waits)",
)
JOBS_QUEUE_WAIT = Histogram(
    "arcana_job_queue_wait_seconds",
    "Time a job waited from when it was due to the start of its attempt, by type",
    ["job_type"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
OUTBOX_BACKLOG = Gauge("arcana_outbox_backlog_rows", "Outbox rows not yet delivered")
OUTBOX_OLDEST_AGE = Gauge(
    "arcana_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest undelivered outbox row (0 when the outbox is empty)",
)
EVENTS_STREAM_LAG = Gauge(
    "arcana_events_stream_lag_entries",
    "Stream entries not yet delivered to the consumer group",
    ["group"],
)
EVENTS_STREAM_PENDING = Gauge(
    "arcana_events_stream_pending_entries",
    "Entries delivered to the consumer group but not acknowledged",
    ["group"],
)
EVENT_HANDLER_DURATION = Histogram(
    "arcana_event_handler_duration_seconds",
    "Run time of the handlers of one event (one attempt), by event type",
    ["event_type"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)
PLUGIN_CALL_DURATION = Histogram(
    "arcana_plugin_call_duration_seconds",
    "Audit plugin call time by plugin",
    ["plugin"],
    buckets=(0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
DB_POOL_IN_USE = Gauge("arcana_db_pool_connections_in_use", "Database connections checked out")
DB_POOL_WAITING = Gauge(
    "arcana_db_pool_waiting", "Tasks waiting for a database connection from the pool"
)
READY = Gauge("arcana_ready", "1 when the last readiness check passed, else 0")
