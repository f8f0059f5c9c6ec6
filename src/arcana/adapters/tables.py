"""SQLAlchemy Core tables: the one schema Alembic migrates on PostgreSQL and SQLite.

Portable types only: UUIDs and timestamps are stored with SQLAlchemy's generic types so the
same migration runs on both engines.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

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
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
)
Index("ix_outbox_unpublished", outbox.c.seq, postgresql_where=outbox.c.published_at.is_(None))

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
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("scheduled_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("unique_key", String(200), nullable=True),
    Column("unique_active", String(200), nullable=True, unique=True),
    Column("worker_id", String(100), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
)
Index("ix_jobs_fetch", jobs.c.status, jobs.c.priority, jobs.c.scheduled_at)
Index("ix_jobs_lease", jobs.c.lease_until)
