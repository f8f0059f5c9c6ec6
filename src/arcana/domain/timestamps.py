"""UTC instants and their wire form, defined once for every layer."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current instant, timezone-aware in UTC (never a naive local time)."""
    return datetime.now(UTC)


def iso_z(value: datetime) -> str:
    """ISO 8601 with ``Z`` for UTC, the form every timestamp takes on the wire (contract §2)."""
    return value.isoformat().replace("+00:00", "Z")
