"""WebAssembly audit plugins: host (wasmtime), loader, audit sink and audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING

from arcana.adapters.database import Database
from arcana.adapters.plugins.audit_log import SqlAuditLog
from arcana.adapters.plugins.sink import HostRegistry, PluginAuditSink
from arcana.config import Settings

if TYPE_CHECKING:
    from arcana.adapters.plugins.host import PluginHost


def build_audit(settings: Settings, db: Database) -> PluginAuditSink:
    """The sink, over the plugin host for ``settings.plugins.dir`` under the configured limits.
    The host (and wasmtime) is made at its first use (``HostRegistry.lazy``); nothing is loaded
    or started until the sink's ``run`` task starts."""
    return PluginAuditSink(
        HostRegistry.lazy(lambda: _host(settings)),
        SqlAuditLog(db),
        queue_size=settings.plugins.audit_queue_size,
        workers=settings.plugins.workers,
    )


def _host(settings: Settings) -> PluginHost:
    from arcana.adapters.plugins.host import PluginHost, PluginLimits

    return PluginHost(
        settings.plugins.dir,
        PluginLimits(
            fuel=settings.plugins.fuel,
            timeout_ms=settings.plugins.timeout_ms,
            memory_bytes=settings.plugins.memory_mb * 1024 * 1024,
            max_failures=settings.plugins.max_failures,
        ),
        cache_dir=settings.var_dir / "plugin-cache",
        # Compiled artifacts are native code: on disk they are authenticated with a key
        # derived from the server secret, checked before anything is deserialized.
        cache_key=settings.jwt_key().encode(),
    )


__all__ = ["PluginAuditSink", "build_audit"]
