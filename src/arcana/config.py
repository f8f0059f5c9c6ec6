"""Settings read from ``ARCANA_*`` environment variables and a ``.env`` file, grouped by area.

``get_settings()`` is cached and handed to the composition root; tests build ``Settings(...)``
directly.

Every setting has one *flat name*: its environment variable without ``ARCANA_``, lowercased
(``ARCANA_DB_POOL_SIZE`` → ``db_pool_size``). The environment, the ``.env`` file and keyword
construction all use flat names, so the variables of the contract never change when a field
moves between groups: ``Settings(db_pool_size=5).database.pool_size == 5``. A group's field
declares its flat name as its ``validation_alias``; ``Settings.variables()`` lists them all.

URLs that can carry a password and keys are ``SecretStr``: ``repr``, ``str`` and logs of the
settings show ``**********``; code reads them with ``.get_secret_value()`` where it connects.
"""

from __future__ import annotations

import functools
import os
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

MIN_JWT_SECRET_BYTES = 32
ENV_PREFIX = "ARCANA_"


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line meant for an operator."""


class _Group(BaseModel):
    """A group of settings; fields are validated by flat name (alias) or by field name."""

    model_config = ConfigDict(frozen=True, validate_by_name=True, validate_by_alias=True)


class HttpSettings(_Group):
    host: str = Field(default="127.0.0.1", validation_alias="http_host")
    port: int = Field(default=8000, ge=0, le=65535, validation_alias="http_port")
    forwarded_allow_ips: str = Field(default="127.0.0.1", validation_alias="forwarded_allow_ips")
    """Proxies whose X-Forwarded-For is trusted for the client address (comma list or ``*``)."""
    max_body_bytes: int = Field(default=1_048_576, ge=1, validation_alias="max_body_bytes")
    server: Literal["uvicorn", "granian"] = Field(default="uvicorn", validation_alias="http_server")
    """The HTTP server ``arcana serve`` runs the app in (both in this process, on its loop)."""


class GrpcSettings(_Group):
    host: str = Field(default="127.0.0.1", validation_alias="grpc_host")
    port: int = Field(default=50051, ge=0, le=65535, validation_alias="grpc_port")
    """0 disables gRPC."""
    max_message_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, validation_alias="grpc_max_message_bytes"
    )


class DatabaseSettings(_Group):
    url: SecretStr = Field(
        default=SecretStr("sqlite+aiosqlite:///./var/arcana.db"), validation_alias="database_url"
    )
    direct_url: SecretStr | None = Field(default=None, validation_alias="database_direct_url")
    """A direct PostgreSQL URL for session features (LISTEN, advisory locks) when ``url`` goes
    through PgBouncer in transaction mode."""
    # 20 kept open, no overflow: the same 20 connections at most as 10 + 10, without closing
    # an overflow connection whenever it comes back to a pool holding 10 idle ones and opening
    # it again on the next burst (connect, start-up, a new prepare of every statement).
    pool_size: int = Field(default=20, ge=1, validation_alias="db_pool_size")
    max_overflow: int = Field(default=0, ge=0, validation_alias="db_max_overflow")
    pool_timeout: float = Field(default=5.0, gt=0, validation_alias="db_pool_timeout")
    statement_timeout_ms: int = Field(
        default=10_000, ge=0, validation_alias="db_statement_timeout_ms"
    )
    connect_timeout: float = Field(default=5.0, gt=0, validation_alias="db_connect_timeout")


class RedisSettings(_Group):
    url: SecretStr | None = Field(default=None, validation_alias="redis_url")
    """Unset: embedded mode (cache, queue dispatch and events stay in this process)."""
    prefix: str = Field(default="arcana", validation_alias="redis_prefix")


class AuthSettings(_Group):
    """Access and refresh tokens."""

    jwt_secret: SecretStr | None = Field(default=None, validation_alias="jwt_secret")
    jwt_issuer: str = Field(default="arcana", validation_alias="jwt_issuer")
    jwt_audience: str = Field(default="arcana-api", validation_alias="jwt_audience")
    access_token_ttl: int = Field(default=900, gt=0, validation_alias="access_token_ttl")
    refresh_token_ttl: int = Field(default=604800, gt=0, validation_alias="refresh_token_ttl")
    refresh_idle_ttl: int = Field(default=604800, gt=0, validation_alias="refresh_idle_ttl")
    refresh_reuse_grace_seconds: float = Field(
        default=0.0, ge=0, validation_alias="refresh_reuse_grace_seconds"
    )
    """0 = strict reuse detection. Above 0, the family's immediate predecessor token rotated
    away this recently is a lost race of concurrent refreshes (401, the session lives on);
    any other rotated-away token, or a later presentation, ends the whole family."""
    reset_token_ttl: int = Field(default=1800, gt=0, validation_alias="reset_token_ttl")


class PasswordSettings(_Group):
    """Argon2id parameters and how many hashes run at once."""

    argon2_memory_kib: int = Field(default=19456, ge=8, validation_alias="argon2_memory_kib")
    argon2_time_cost: int = Field(default=2, ge=1, validation_alias="argon2_time_cost")
    argon2_parallelism: int = Field(default=1, ge=1, validation_alias="argon2_parallelism")
    hash_slots: int = Field(default=0, ge=0, validation_alias="password_hash_slots")
    """Argon2 operations at once in this process (0 = the CPU count)."""
    hash_wait_seconds: float = Field(
        default=1.0, gt=0, validation_alias="password_hash_wait_seconds"
    )
    """How long a password operation waits for a hashing slot before answering 503."""


class LimitSettings(_Group):
    """Abuse limits of the auth routes."""

    login_max_failures_per_account: int = Field(
        default=10, ge=1, validation_alias="login_max_failures_per_account"
    )
    login_max_failures_per_ip: int = Field(
        default=100, ge=1, validation_alias="login_max_failures_per_ip"
    )
    login_window_seconds: int = Field(default=900, ge=1, validation_alias="login_window_seconds")
    register_per_ip: int = Field(default=20, ge=1, validation_alias="register_limit_per_ip")
    """Registrations per client address per hour; then 429."""
    reset_per_email: int = Field(default=3, ge=1, validation_alias="reset_limit_per_email")
    """Reset mails per email per hour; beyond it the answer stays 202 and no mail goes out."""
    reset_per_ip: int = Field(default=20, ge=1, validation_alias="reset_limit_per_ip")
    """Forgot-password requests per client address per hour; then 429."""


class MailSettings(_Group):
    smtp_url: SecretStr | None = Field(default=None, validation_alias="smtp_url")
    """Unset: mails are written as ``.eml`` files under ``<var_dir>/mail/``."""
    sender: str = Field(default="Arcana <no-reply@arcana.local>", validation_alias="mail_from")


class UserSyncSettings(_Group):
    url: SecretStr | None = Field(default=None, validation_alias="user_sync_url")
    """Where ``sync.pending_users`` POSTs new users; unset = users are marked synced."""


class CacheSettings(_Group):
    ttl: int = Field(default=3600, ge=1, validation_alias="cache_ttl")


class JobSettings(_Group):
    """The job queue, its workers and the periodic scheduler."""

    backend: Literal["auto", "redis", "database"] = Field(
        default="auto", validation_alias="queue_backend"
    )
    partitions: int = Field(default=1, ge=1, le=64, validation_alias="queue_partitions")
    """Redis queue partitions, each under its own hash tag (1 = the historical keys)."""
    worker_concurrency: int = Field(default=32, ge=1, validation_alias="worker_concurrency")
    worker_alive_file: Path | None = Field(default=None, validation_alias="worker_alive_file")
    """Touched by ``arcana worker`` every few seconds while its event loop turns (a liveness
    probe checks its age); unset: no file."""
    lease_seconds: float = Field(default=30.0, gt=0, validation_alias="job_lease_seconds")
    reap_interval: float = Field(default=1.0, gt=0, validation_alias="job_reap_interval")
    batch_size: int = Field(default=32, ge=1, validation_alias="job_batch_size")
    timeout: float = Field(default=300.0, gt=0, validation_alias="job_timeout")
    backoff_base: float = Field(default=1.0, ge=0, validation_alias="job_backoff_base")
    backoff_cap: float = Field(default=300.0, ge=0, validation_alias="job_backoff_cap")
    finished_ttl: int = Field(default=86400, ge=1, validation_alias="job_finished_ttl")
    poll_interval: float = Field(default=0.5, gt=0, validation_alias="job_poll_interval")
    scheduler_enabled: bool = Field(default=True, validation_alias="scheduler_enabled")
    schedule_pending_users_seconds: int = Field(
        default=300, ge=1, validation_alias="schedule_pending_users_seconds"
    )
    schedule_cleanup_tokens_seconds: int = Field(
        default=3600, ge=1, validation_alias="schedule_cleanup_tokens_seconds"
    )


class EventSettings(_Group):
    """The outbox, its relay and the event stream consumers."""

    stream_maxlen: int = Field(default=100_000, ge=1, validation_alias="events_stream_maxlen")
    relay_batch: int = Field(default=200, ge=1, validation_alias="events_relay_batch")
    relay_poll_seconds: float = Field(
        default=2.0, gt=0, validation_alias="events_relay_poll_seconds"
    )
    claim_idle_ms: int = Field(default=30_000, ge=1, validation_alias="events_claim_idle_ms")
    max_deliveries: int = Field(default=5, ge=1, validation_alias="events_max_deliveries")
    handler_retries: int = Field(default=3, ge=1, validation_alias="events_handler_retries")
    consumer_block_ms: int = Field(
        default=1000, ge=1, le=1500, validation_alias="events_consumer_block_ms"
    )
    partitions: int = Field(default=1, ge=1, le=64, validation_alias="events_partitions")
    """Redis event streams, one consumer group each; events of one aggregate share one."""
    outbox_retention_seconds: int = Field(
        default=86_400, ge=1, validation_alias="outbox_retention_seconds"
    )
    """Published outbox rows are deleted this long after publication."""


class PluginSettings(_Group):
    dir: Path = Field(default=Path("./plugins"), validation_alias="plugins_dir")
    fuel: int = Field(default=10_000_000, ge=1, validation_alias="plugin_fuel")
    timeout_ms: int = Field(default=50, ge=1, validation_alias="plugin_timeout_ms")
    memory_mb: int = Field(default=16, ge=1, validation_alias="plugin_memory_mb")
    max_failures: int = Field(default=5, ge=1, validation_alias="plugin_max_failures")
    workers: int = Field(default=2, ge=1, le=32, validation_alias="plugin_workers")
    audit_queue_size: int = Field(default=10_000, ge=1, validation_alias="audit_queue_size")


class ObservabilitySettings(_Group):
    log_level: str = Field(default="INFO", validation_alias="log_level")
    log_json: bool | None = Field(default=None, validation_alias="log_json")
    """Unset: JSON lines unless stderr is a terminal or ARCANA_ENV=development (see log.py)."""
    otel_endpoint: SecretStr | None = Field(default=None, validation_alias="otel_endpoint")
    """OTLP/HTTP base URL (``/v1/traces`` is appended); set it, or the standard
    OTEL_EXPORTER_OTLP_ENDPOINT, to turn tracing on. Secret: a URL may carry credentials."""
    metrics_sample_seconds: float = Field(
        default=10.0, gt=0, validation_alias="metrics_sample_seconds"
    )
    """How often a process samples queue, outbox and stream gauges for /metrics."""


def _flat_name(variable: str) -> str:
    """``ARCANA_DB_POOL_SIZE`` → ``db_pool_size``."""
    return variable.removeprefix(ENV_PREFIX).lower()


def reveal(secret: SecretStr | None) -> str | None:
    """The value of an optional secret, for the adapter that connects with it."""
    return secret.get_secret_value() if secret is not None else None


class _FlatVariables(PydanticBaseSettingsSource):
    """Reads every setting's ``ARCANA_<FLAT NAME>`` from the variables of an env or dotenv
    source, as flat names; ``Settings`` routes them to their groups."""

    def __init__(self, settings_cls: type[BaseSettings], source: EnvSettingsSource) -> None:
        super().__init__(settings_cls)
        self._source = source

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads by flat name

    def __call__(self) -> dict[str, Any]:
        found = self._source.env_vars
        values: dict[str, Any] = {}
        for name in Settings.variables():
            key = name if self._source.case_sensitive else name.lower()
            if key in found:
                values[_flat_name(name)] = found[key]
        return values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", validate_default=True
    )

    env: Literal["development", "production", "test"] = "development"
    var_dir: Path = Path("./var")
    shutdown_timeout: float = Field(default=10.0, ge=0)

    http: HttpSettings = Field(default_factory=HttpSettings)
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    passwords: PasswordSettings = Field(default_factory=PasswordSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    mail: MailSettings = Field(default_factory=MailSettings)
    user_sync: UserSyncSettings = Field(default_factory=UserSyncSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    plugins: PluginSettings = Field(default_factory=PluginSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keywords first, then the environment, then ``.env``; all by flat name."""
        assert isinstance(env_settings, EnvSettingsSource)
        assert isinstance(dotenv_settings, EnvSettingsSource)
        return (
            init_settings,
            _FlatVariables(settings_cls, env_settings),
            _FlatVariables(settings_cls, dotenv_settings),
        )

    @classmethod
    @functools.cache
    def variables(cls) -> dict[str, tuple[str, ...]]:
        """Every environment variable → the attribute path that holds it
        (``"ARCANA_DB_POOL_SIZE": ("database", "pool_size")``)."""
        out: dict[str, tuple[str, ...]] = {}
        for name, field in cls.model_fields.items():
            group = field.annotation
            if isinstance(group, type) and issubclass(group, _Group):
                for inner, inner_field in group.model_fields.items():
                    flat = inner_field.validation_alias
                    assert isinstance(flat, str), f"{group.__name__}.{inner} has no flat name"
                    out[ENV_PREFIX + flat.upper()] = (name, inner)
            else:
                out[ENV_PREFIX + name.upper()] = (name,)
        return out

    @model_validator(mode="before")
    @classmethod
    def _route_flat_names(cls, data: Any) -> Any:
        """``db_pool_size=5`` → ``database={"pool_size": 5}``; a value given by group wins."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, path in cls.variables().items():
            flat = _flat_name(name)
            if len(path) == 1 or flat not in data:
                continue
            group, field = path
            nested = dict(data.get(group) or {})  # a group model or dict given as a whole
            nested.setdefault(field, data.pop(flat))
            data[group] = nested
        return data

    @model_validator(mode="after")
    def _check_production(self) -> Settings:
        if self.env == "production":
            secret = self.auth.jwt_secret.get_secret_value() if self.auth.jwt_secret else ""
            if not secret:
                raise ConfigError("ARCANA_JWT_SECRET is required when ARCANA_ENV=production")
            if len(secret.encode()) < MIN_JWT_SECRET_BYTES:
                raise ConfigError(
                    f"ARCANA_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes "
                    "when ARCANA_ENV=production"
                )
        return self

    def flat(self) -> dict[str, Any]:
        """Every value by flat name (secrets stay ``SecretStr``)."""
        values: dict[str, Any] = {}
        for name, path in self.variables().items():
            value: Any = self
            for part in path:
                value = getattr(value, part)
            values[_flat_name(name)] = value
        return values

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (by flat name, or whole groups), validated like a new
        ``Settings`` but without reading the environment again."""
        return type(self).model_validate({**self.flat(), **changes})

    @property
    def embedded(self) -> bool:
        """No Redis: cache, queue dispatch and events stay in this process and the database."""
        return self.redis.url is None

    @property
    def is_sqlite(self) -> bool:
        return self.database.url.get_secret_value().startswith("sqlite")

    @property
    def effective_queue_backend(self) -> Literal["redis", "database"]:
        if self.jobs.backend == "auto":
            return "database" if self.embedded else "redis"
        return self.jobs.backend

    def jwt_key(self) -> str:
        """The HMAC key: configured, or (development) generated once and kept in ``var_dir``."""
        secret = self.auth.jwt_secret
        if secret is not None and secret.get_secret_value():
            return secret.get_secret_value()
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


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
