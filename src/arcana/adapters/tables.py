"""SQLAlchemy Core tables: the one schema Alembic migrates on PostgreSQL and SQLite.

Portable types only: UUIDs and timestamps are stored with SQLAlchemy's generic types so the
same migration runs on both engines.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from arcana.adapters.money import Money


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on both engines: PostgreSQL keeps ``timestamptz``; SQLite stores
    text without an offset, so values are normalised to UTC on the way in and tagged UTC on
    the way out. Every table uses it, so no caller ever compares naive with aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Autoincrement id gives the relay a total order of commits-in-insert-order per aggregate.
outbox = Table(
    "outbox",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("id", String(36), nullable=False, unique=True),
    Column("kind", String(10), nullable=False, server_default="event"),  # "event" | "job"
    Column("event_type", String(100), nullable=False),
    Column("aggregate_id", String(64), nullable=True),
    Column("data", JSON, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("published_at", UtcDateTime(), nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("trace_context", String(256), nullable=True),  # W3C traceparent (tracing on)
)
Index("ix_outbox_unpublished", outbox.c.seq, postgresql_where=outbox.c.published_at.is_(None))

# -- auth --
users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(254), nullable=False, unique=True),  # stored lowercased
    Column("password_hash", String(255), nullable=False),
    Column("roles", String(200), nullable=False, server_default="user"),  # comma-separated
    Column("generation", Integer, nullable=False, server_default="0"),
    Column("sync_status", String(10), nullable=False, server_default="PENDING"),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)
Index("ix_users_sync_status", users.c.sync_status)

auth_sessions = Table(
    "auth_sessions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("last_used_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("user_agent", String(512), nullable=True),
    Column("ip", String(64), nullable=True),
    Column("revoked_at", UtcDateTime(), nullable=True),
)
Index("ix_auth_sessions_user_id", auth_sessions.c.user_id)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "session_id",
        String(36),
        ForeignKey("auth_sessions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("user_id", String(36), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),  # SHA-256 hex
    Column("created_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=True),
)
Index("ix_refresh_tokens_session_id", refresh_tokens.c.session_id)

password_reset_tokens = Table(
    "password_reset_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("used_at", UtcDateTime(), nullable=True),
)
Index("ix_password_reset_tokens_user_id", password_reset_tokens.c.user_id)

# -- products --
products = Table(
    "products",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=True),
    Column("price", Money(), nullable=False),
    Column("stock", Integer, nullable=False),
    Column("category", String(100), nullable=True),
    Column("status", String(20), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    CheckConstraint("stock >= 0", name="stock_non_negative"),
    CheckConstraint("price >= 0", name="price_non_negative"),
)
# Every list is ordered newest first; the filters use the same order after their equality column.
Index("ix_products_created_at_id", products.c.created_at, products.c.id)
Index(
    "ix_products_category_created_at_id", products.c.category, products.c.created_at, products.c.id
)
Index("ix_products_status_created_at_id", products.c.status, products.c.created_at, products.c.id)
# -- jobs --
# ``seq`` orders jobs FIFO within a priority; ``unique_active`` holds ``unique_key`` only while
# the job is queued, scheduled, running or retrying, so a unique index deduplicates exactly then.
jobs = Table(
    "jobs",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("id", String(64), nullable=False, unique=True),
    Column("job_type", String(100), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("max_retries", Integer, nullable=False),
    Column("retry_count", Integer, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("scheduled_at", UtcDateTime(), nullable=False),
    Column("started_at", UtcDateTime(), nullable=True),
    Column("finished_at", UtcDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("unique_key", String(200), nullable=True),
    Column("unique_active", String(200), nullable=True, unique=True),
    Column("worker_id", String(100), nullable=True),
    Column("lease_until", UtcDateTime(), nullable=True),
    Column("trace_context", String(256), nullable=True),  # W3C traceparent (tracing on)
)
Index("ix_jobs_fetch", jobs.c.status, jobs.c.priority, jobs.c.scheduled_at)
Index("ix_jobs_lease", jobs.c.lease_until)
# -- plugins --
# Audit events that a plugin flagged, with every plugin's result ([{plugin, code}]).
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("event_type", String(100), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("resource", String(255), nullable=False),
    Column("action", String(100), nullable=False),
    Column("timestamp", UtcDateTime(), nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("flagged", Boolean, nullable=False),
    Column("results", JSON, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)
Index("ix_audit_log_flagged_created", audit_log.c.flagged, audit_log.c.created_at)
