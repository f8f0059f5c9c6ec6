"""Domain events: facts in the past tense, recorded in the unit of work and written to the
outbox in the same transaction as the change that caused them (contract §5)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from arcana.domain.timestamps import iso_z, utcnow

SOURCE = "arcana"


@dataclass(frozen=True, slots=True)
class DomainEvent:
    event_type: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timestamp: datetime = field(default_factory=utcnow)
    source: str = SOURCE
    aggregate_id: str | None = None
    """Events of one aggregate (a user, a product) are delivered in the order they were recorded."""

    def envelope(self) -> dict[str, Any]:
        """The wire form of contract §5."""
        return {
            "id": self.id,
            "event_type": self.event_type,
            "data": self.data,
            "timestamp": iso_z(self.timestamp),
            "source": self.source,
        }
