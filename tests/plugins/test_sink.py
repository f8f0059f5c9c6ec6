"""The audit sink: emit never blocks, a full queue drops and counts."""

from __future__ import annotations

from pathlib import Path

from arcana.adapters.plugins.host import PluginHost
from arcana.adapters.plugins.sink import HostRegistry, PluginAuditSink
from arcana.domain.audit import AuditEvent
from arcana.domain.plugins import AuditEntry
from arcana.metrics import AUDIT_DROPPED


class InMemoryAuditLog:
    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    async def add(self, entry: AuditEntry) -> None:
        self.entries.append(entry)

    async def list(
        self, *, flagged: bool | None, page: int, size: int
    ) -> tuple[list[AuditEntry], int]:
        return self.entries[page * size : (page + 1) * size], len(self.entries)


def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    sink = PluginAuditSink(
        HostRegistry(PluginHost(tmp_path)), InMemoryAuditLog(), queue_size=2, workers=1
    )
    before = AUDIT_DROPPED._value.get()
    for _ in range(5):
        sink.emit(AuditEvent("user.login", "u", "auth", "login"))
    assert sink.dropped == 3
    assert AUDIT_DROPPED._value.get() - before == 3
