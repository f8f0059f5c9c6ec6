"""Audit plugins and the audit log: the ports the plugin service needs (contract §6)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class PluginResult:
    plugin: str
    code: int
    """``0`` ok, ``1`` flag for review, negative: the plugin failed (trap, timeout, its own
    error code)."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: str
    event_type: str
    user_id: str
    resource: str
    action: str
    timestamp: datetime
    metadata: dict[str, Any]
    flagged: bool
    results: list[PluginResult]


class PluginRegistry(Protocol):
    """The loaded plugin set. Methods block (compiling, running wasm): call them in a thread."""

    def statuses(self) -> list[dict[str, Any]]:
        """One dict per plugin: name, file, digest, version, state, calls, flags, errors,
        p50_us, p99_us."""
        ...

    def reload(self) -> list[dict[str, Any]]:
        """Load the plugin directory again and swap the set atomically."""
        ...

    def check(self, path: Path) -> dict[str, Any]:
        """Validate one module and run a sample event; raises ``ValidationFailed``."""
        ...


class AuditLog(Protocol):
    async def add(self, entry: AuditEntry) -> None: ...

    async def list(
        self, *, flagged: bool | None, page: int, size: int
    ) -> tuple[list[AuditEntry], int]:
        """Newest first; returns (entries of the page, total)."""
        ...


class PluginReloadBroadcast(Protocol):
    """Tells the other API processes that the plugin set was reloaded, so a reload on one
    instance reaches every instance (and ``GET /admin/plugins`` agrees everywhere)."""

    async def announce(self) -> None: ...

    async def listen(self, stop: Any, on_reload: Any) -> None:
        """Run until ``stop`` (an asyncio.Event) is set, awaiting ``on_reload()`` whenever
        another process announced a reload."""
        ...
