"""Admin routes for the audit plugins and the audit log (contract §2, §8)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from arcana.api.deps import AdminPrincipal, ServicesDep
from arcana.domain.timestamps import iso_z

router = APIRouter(prefix="/api/v1/admin", tags=["plugins"])


class PluginRead(BaseModel):
    name: str
    file: str
    digest: str | None
    version: int | None
    state: str
    calls: int
    flags: int
    errors: int
    p50_us: float | None
    p99_us: float | None
    error: str | None = None
    recycled: int = 0
    """Instances of a plugin without ``dealloc`` replaced as their memory neared the cap."""
    output_dropped: int = 0
    """Bytes of the plugin's stdout/stderr past the per-call log bound."""


class PluginList(BaseModel):
    plugins: list[PluginRead]


class PluginResultRead(BaseModel):
    plugin: str
    code: int


class AuditEntryRead(BaseModel):
    id: str
    event_type: str
    user_id: str
    resource: str
    action: str
    timestamp: str
    metadata: dict[str, Any]
    flagged: bool
    results: list[PluginResultRead]


class AuditPage(BaseModel):
    data: list[AuditEntryRead]
    page: int
    size: int
    total: int


@router.get("/plugins", summary="Loaded plugins with their counters")
async def list_plugins(_admin: AdminPrincipal, services: ServicesDep) -> PluginList:
    statuses = await services.plugins.list_plugins()
    return PluginList(plugins=[PluginRead(**s) for s in statuses])


@router.post("/plugins/reload", summary="Reload the plugin directory (an audited change)")
async def reload_plugins(admin: AdminPrincipal, services: ServicesDep) -> PluginList:
    statuses = await services.plugins.reload(admin)
    return PluginList(plugins=[PluginRead(**s) for s in statuses])


@router.get("/audit", summary="The audit log (events flagged by a plugin), newest first")
async def list_audit(
    _admin: AdminPrincipal,
    services: ServicesDep,
    flagged: bool | None = None,
    page: int = Query(0, ge=0, le=10_000_000),
    size: int = Query(10, ge=1, le=100),
) -> AuditPage:
    entries, total = await services.plugins.audit_entries(flagged=flagged, page=page, size=size)
    return AuditPage(
        data=[
            AuditEntryRead(
                id=e.id,
                event_type=e.event_type,
                user_id=e.user_id,
                resource=e.resource,
                action=e.action,
                timestamp=iso_z(e.timestamp),
                metadata=e.metadata,
                flagged=e.flagged,
                results=[PluginResultRead(plugin=r.plugin, code=r.code) for r in e.results],
            )
            for e in entries
        ],
        page=page,
        size=size,
        total=total,
    )
