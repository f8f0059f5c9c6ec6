"""Pushing users to an external system: a webhook POST of the user JSON, or nothing at all."""

from __future__ import annotations

from typing import Any


class WebhookUserSync:
    """POSTs the user JSON to ``url``; any non-2xx answer or transport error raises."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._url = url
        self._timeout = timeout

    async def push(self, user: dict[str, Any]) -> None:
        import httpx  # here: only a configured webhook needs it (CLI start-up time)

        async with httpx.AsyncClient(timeout=self._timeout) as client:
            response = await client.post(self._url, json=user)
            response.raise_for_status()


class NoUserSync:
    """No sync target configured: every user counts as synced."""

    async def push(self, user: dict[str, Any]) -> None:
        return None
