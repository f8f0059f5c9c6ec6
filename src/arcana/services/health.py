"""Readiness: can this process reach what it depends on (``/readyz``, gRPC health, the
``arcana_ready`` gauge)?"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

Probe = Callable[[], Awaitable[bool]]
"""Answers whether one dependency is reachable; never raises."""


class HealthService:
    def __init__(self, probes: Mapping[str, Probe]) -> None:
        self._probes = dict(probes)

    async def ready(self) -> dict[str, bool]:
        """Every dependency by name (``database``, and ``redis`` when configured)."""
        return {name: await probe() for name, probe in self._probes.items()}

    async def check(self, name: str) -> bool:
        """One dependency; an unknown name is not ready."""
        probe = self._probes.get(name)
        return probe is not None and await probe()
