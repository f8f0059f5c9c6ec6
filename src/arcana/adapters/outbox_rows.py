"""The outbox rows of recorded events and job requests, as every writer stores them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select

from arcana.domain.events import DomainEvent
from arcana.domain.jobs import JobRequest
from arcana.domain.timestamps import utcnow

NOTIFY_CHANNEL = "arcana_outbox"
"""Relays of other processes LISTEN here (``Database.notifies_outbox``)."""
NOTIFY_RELAYS = select(func.pg_notify(NOTIFY_CHANNEL, ""))
"""PostgreSQL: sent by a transaction that writes outbox rows, delivered at its commit."""


def outbox_rows(
    events: Sequence[DomainEvent], jobs: Sequence[JobRequest], trace_context: str | None
) -> list[dict[str, Any]]:
    """Events first, then jobs, in the order recorded. ``trace_context``: the traceparent the
    work these rows cause continues (``None`` when tracing is off)."""
    rows = [
        {
            "id": e.id,
            "kind": "event",
            "event_type": e.event_type,
            "aggregate_id": e.aggregate_id,
            "data": e.envelope(),
            "created_at": e.timestamp,
            "trace_context": trace_context,
        }
        for e in events
    ]
    now = utcnow()
    rows += [
        {
            "id": str(uuid.uuid4()),
            "kind": "job",
            "event_type": j.job_type,
            "aggregate_id": None,
            "data": j.to_dict(),
            "created_at": now,
            "trace_context": trace_context,
        }
        for j in jobs
    ]
    return rows
