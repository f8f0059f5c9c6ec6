"""Audit events: what real actions report to the WebAssembly audit plugins (contract §6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from arcana.domain.timestamps import iso_z, utcnow


@dataclass(frozen=True, slots=True)
class AuditEvent:
    event_type: str
    """``user.login``, ``user.login_failed``, ``user.data_access``, ``admin.config_change``, …"""
    user_id: str
    resource: str
    action: str
    metadata: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=utcnow)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "event_type": self.event_type,
            "user_id": self.user_id,
            "resource": self.resource,
            "action": self.action,
            "timestamp": iso_z(self.timestamp),
            "metadata": self.metadata,
        }


class AuditSink(Protocol):
    """Takes audit events off the request path. ``emit`` never blocks and never raises: a full
    queue drops the event and counts it."""

    def emit(self, event: AuditEvent) -> None: ...
