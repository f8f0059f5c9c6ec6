"""SQLAlchemy Core tables: the one schema Alembic migrates on PostgreSQL and SQLite.

Portable types only: UUIDs and timestamps are stored with SQLAlchemy's generic types so the
same migration runs on both engines.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
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
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("flagged", Boolean, nullable=False),
    Column("results", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index("ix_audit_log_flagged_created", audit_log.c.flagged, audit_log.c.created_at)
