"""Settings read from ``ARCANA_*`` environment variables and a ``.env`` file.

``get_settings()`` is cached and handed to the container; tests build ``Settings(...)`` directly.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_JWT_SECRET_BYTES = 32


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line meant for an operator."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ARCANA_", env_file=".env", extra="ignore", validate_default=True
    )

    env: Literal["development", "production", "test"] = "development"
    database_url: str = "sqlite+aiosqlite:///./var/arcana.db"
    redis_url: str | None = None
    jwt_secret: SecretStr | None = None
    var_dir: Path = Path("./var")

    http_host: str = "127.0.0.1"
    forwarded_allow_ips: str = "127.0.0.1"
    """Proxies whose X-Forwarded-For is trusted for the client address (comma list or ``*``)."""
    http_port: int = Field(default=8000, ge=0, le=65535)
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    grpc_host: str = "127.0.0.1"

    access_token_ttl: int = Field(default=900, gt=0)
    refresh_token_ttl: int = Field(default=604800, gt=0)
    refresh_idle_ttl: int = Field(default=604800, gt=0)
    refresh_reuse_grace_seconds: float = Field(default=0.0, ge=0)
    """0 = strict reuse detection. Above 0, the family's immediate predecessor token rotated
    away this recently is a lost race of concurrent refreshes (401, the session lives on);
    any other rotated-away token, or a later presentation, ends the whole family."""
    reset_token_ttl: int = Field(default=1800, gt=0)
    jwt_issuer: str = "arcana"
    jwt_audience: str = "arcana-api"

    argon2_memory_kib: int = Field(default=19456, ge=8)
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_parallelism: int = Field(default=1, ge=1)

    login_max_failures_per_account: int = Field(default=10, ge=1)
    login_max_failures_per_ip: int = Field(default=100, ge=1)
    login_window_seconds: int = Field(default=900, ge=1)

    # -- auth and abuse limits --
    register_limit_per_ip: int = Field(default=20, ge=1)
    """Registrations per client address per hour; then 429."""
    reset_limit_per_email: int = Field(default=3, ge=1)
    """Reset mails per email per hour; beyond it the answer stays 202 and no mail goes out."""
    reset_limit_per_ip: int = Field(default=20, ge=1)
    """Forgot-password requests per client address per hour; then 429."""
    password_hash_slots: int = Field(default=0, ge=0)
    """Argon2 operations at once in this process (0 = the CPU count)."""
    password_hash_wait_seconds: float = Field(default=1.0, gt=0)
    """How long a password operation waits for a hashing slot before answering 503."""
    outbox_retention_seconds: int = Field(default=86_400, ge=1)
    """Published outbox rows are deleted this long after publication."""

    plugins_dir: Path = Path("./plugins")
    plugin_fuel: int = Field(default=10_000_000, ge=1)
    plugin_timeout_ms: int = Field(default=50, ge=1)
    plugin_memory_mb: int = Field(default=16, ge=1)
    plugin_max_failures: int = Field(default=5, ge=1)
    plugin_workers: int = Field(default=2, ge=1, le=32)
    audit_queue_size: int = Field(default=10_000, ge=1)

    smtp_url: str | None = None
    mail_from: str = "Arcana <no-reply@arcana.local>"
    user_sync_url: str | None = None

    cache_ttl: int = Field(default=3600, ge=1)
    grpc_max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_body_bytes: int = Field(default=1_048_576, ge=1)

    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_timeout: float = Field(default=5.0, gt=0)
    db_statement_timeout_ms: int = Field(default=10_000, ge=0)
    db_connect_timeout: float = Field(default=5.0, gt=0)

    queue_backend: Literal["auto", "redis", "database"] = "auto"
    redis_prefix: str = "arcana"
    log_level: str = "INFO"
    log_json: bool | None = None
    """Unset: JSON lines unless stderr is a terminal or ARCANA_ENV=development (see log.py)."""
    shutdown_timeout: float = Field(default=10.0, ge=0)

    # -- jobs --
    worker_concurrency: int = Field(default=16, ge=1)
    job_lease_seconds: float = Field(default=30.0, gt=0)
    job_reap_interval: float = Field(default=1.0, gt=0)
    job_batch_size: int = Field(default=32, ge=1)
    job_timeout: float = Field(default=300.0, gt=0)
    job_backoff_base: float = Field(default=1.0, ge=0)
    job_backoff_cap: float = Field(default=300.0, ge=0)
    job_finished_ttl: int = Field(default=86400, ge=1)
    job_poll_interval: float = Field(default=0.5, gt=0)
    scheduler_enabled: bool = True
    schedule_pending_users_seconds: int = Field(default=300, ge=1)
    schedule_cleanup_tokens_seconds: int = Field(default=3600, ge=1)
    # -- events --
    events_stream_maxlen: int = Field(default=100_000, ge=1)
    events_relay_batch: int = Field(default=200, ge=1)
    events_relay_poll_seconds: float = Field(default=2.0, gt=0)
    events_claim_idle_ms: int = Field(default=30_000, ge=1)
    events_max_deliveries: int = Field(default=5, ge=1)
    events_handler_retries: int = Field(default=3, ge=1)
    events_consumer_block_ms: int = Field(default=1000, ge=1, le=1500)
    # -- scale-out (Redis Cluster partitions, PgBouncer) --
    queue_partitions: int = Field(default=1, ge=1, le=64)
    """Redis queue partitions, each under its own hash tag (1 = the historical keys)."""
    events_partitions: int = Field(default=1, ge=1, le=64)
    """Redis event streams, one consumer group each; events of one aggregate share one."""
    database_direct_url: str | None = None
    """A direct PostgreSQL URL for session features (LISTEN, advisory locks) when
    ``database_url`` goes through PgBouncer in transaction mode."""

    # -- observability --
    otel_endpoint: str | None = None
    """OTLP/HTTP base URL (``/v1/traces`` is appended); set it, or the standard
    OTEL_EXPORTER_OTLP_ENDPOINT, to turn tracing on."""
    metrics_sample_seconds: float = Field(default=10.0, gt=0)
    """How often a process samples queue, outbox and stream gauges for /metrics."""

    @model_validator(mode="after")
    def _check_production(self) -> Settings:
        if self.env == "production":
            secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
            if not secret:
                raise ConfigError("ARCANA_JWT_SECRET is required when ARCANA_ENV=production")
            if len(secret.encode()) < MIN_JWT_SECRET_BYTES:
                raise ConfigError(
                    f"ARCANA_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes "
                    "when ARCANA_ENV=production"
                )
        return self

    @property
    def embedded(self) -> bool:
        """No Redis: cache, queue dispatch and events stay in this process and the database."""
        return self.redis_url is None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def effective_queue_backend(self) -> Literal["redis", "database"]:
        if self.queue_backend == "auto":
            return "database" if self.embedded else "redis"
        return self.queue_backend

    def jwt_key(self) -> str:
        """The HMAC key: configured, or (development) generated once and kept in ``var_dir``."""
        if self.jwt_secret is not None and self.jwt_secret.get_secret_value():
            return self.jwt_secret.get_secret_value()
        path = self.var_dir / "jwt_secret"
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        # Written to a private (0600 from creation) temporary file, flushed, then linked into
        # place: the final name never exists empty, half-written or readable by others, and
        # link() fails if another process got there first (both then use the same key).
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(key)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return path.read_text().strip()
        finally:
            tmp.unlink(missing_ok=True)
        return key


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
