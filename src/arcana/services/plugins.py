"""Operating the audit plugins: list, reload, check, and read the audit log."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from arcana.domain.audit import AuditEvent, AuditSink
from arcana.domain.identity import Principal
from arcana.domain.plugins import AuditEntry, AuditLog, PluginRegistry, PluginReloadBroadcast


class PluginService:
    def __init__(
        self,
        registry: PluginRegistry,
        audit_log: AuditLog,
        audit: AuditSink,
        broadcast: PluginReloadBroadcast,
    ) -> None:
        self.registry = registry
        self.audit_log = audit_log
        self.audit = audit
        self.broadcast = broadcast

    async def list_plugins(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.registry.statuses)

    async def reload(self, principal: Principal) -> list[dict[str, Any]]:
        """Reload the plugin directory; the reload itself is an audited config change."""
        statuses = await asyncio.to_thread(self.registry.reload)
        await self.broadcast.announce()
        self.audit.emit(
            AuditEvent(
                event_type="admin.config_change",
                user_id=principal.user_id,
                resource="plugins",
                action="reload",
                metadata={
                    "plugins": [s["name"] for s in statuses],
                    "failed": [s["name"] for s in statuses if s["state"] == "failed"],
                },
            )
        )
        return statuses

    async def apply_remote_reload(self) -> None:
        """Another process reloaded: load the same directory here (audited over there)."""
        await asyncio.to_thread(self.registry.reload)

    async def follow_reloads(self, stop: asyncio.Event) -> None:
        """Background loop of every API process: apply reloads announced elsewhere."""
        await self.broadcast.listen(stop, self.apply_remote_reload)

    async def check(self, path: Path) -> dict[str, Any]:
        return await asyncio.to_thread(self.registry.check, path)

    async def audit_entries(
        self, *, flagged: bool | None, page: int, size: int
    ) -> tuple[list[AuditEntry], int]:
        return await self.audit_log.list(flagged=flagged, page=page, size=size)
