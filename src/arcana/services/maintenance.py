"""The periodic house-keeping jobs (``sync.pending_users``, ``sync.cleanup_tokens``) as use
cases, so the job table calls a service like every other job."""

from __future__ import annotations

from datetime import timedelta

from arcana.domain.delivery import OutboxHistory
from arcana.domain.ports import Clock, SystemClock
from arcana.services.auth import AuthService
from arcana.services.users import UserSyncService


class MaintenanceService:
    def __init__(
        self,
        auth: AuthService,
        user_sync: UserSyncService,
        outbox: OutboxHistory,
        outbox_retention: timedelta,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._auth = auth
        self._user_sync = user_sync
        self._outbox = outbox
        self._retention = outbox_retention
        self._clock = clock or SystemClock()

    async def sync_pending_users(self) -> int:
        """Push users not yet synced to the external directory; returns the users handled
        (synced or failed)."""
        report = await self._user_sync.sync_pending_users()
        return report.synced + report.failed

    async def cleanup(self) -> int:
        """Dead tokens and sessions, and outbox rows published longer ago than the retention
        period (``ARCANA_OUTBOX_RETENTION_SECONDS``); returns the rows deleted."""
        purged = await self._outbox.purge_published(self._clock.now() - self._retention)
        return await self._auth.cleanup_tokens() + purged
