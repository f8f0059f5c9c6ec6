"""The ``audit_log`` table: audit events a plugin flagged, with every plugin's result."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select

from arcana.adapters.database import Database
from arcana.adapters.tables import audit_log
from arcana.domain.plugins import AuditEntry, PluginResult
from arcana.domain.timestamps import utcnow


class SqlAuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, entry: AuditEntry) -> None:
        statement = insert(audit_log).values(
            id=entry.id,
            event_type=entry.event_type,
            user_id=entry.user_id,
            resource=entry.resource,
            action=entry.action,
            timestamp=entry.timestamp,
            metadata=entry.metadata,
            flagged=entry.flagged,
            results=[{"plugin": r.plugin, "code": r.code} for r in entry.results],
            created_at=utcnow(),
        )
        if self.db.group_commit is not None:  # SQLite: batched with the other writes
            await self.db.group_commit.run(lambda conn: conn.execute(statement))
            return
        async with self.db.engine.begin() as conn:
            await conn.execute(statement)

    async def list(
        self, *, flagged: bool | None, page: int, size: int
    ) -> tuple[list[AuditEntry], int]:
        query = select(audit_log)
        count = select(func.count()).select_from(audit_log)
        if flagged is not None:
            query = query.where(audit_log.c.flagged.is_(flagged))
            count = count.where(audit_log.c.flagged.is_(flagged))
        query = (
            query.order_by(audit_log.c.created_at.desc(), audit_log.c.id.desc())
            .limit(size)
            .offset(page * size)
        )
        async with self.db.engine.connect() as conn:
            total = int((await conn.execute(count)).scalar_one())
            rows = (await conn.execute(query)).mappings().all()
        return [_entry(dict(r)) for r in rows], total


def _entry(row: dict[str, Any]) -> AuditEntry:
    ts: datetime = row["timestamp"]
    if ts.tzinfo is None:  # SQLite hands back naive datetimes
        ts = ts.replace(tzinfo=UTC)
    return AuditEntry(
        id=row["id"],
        event_type=row["event_type"],
        user_id=row["user_id"],
        resource=row["resource"],
        action=row["action"],
        timestamp=ts,
        metadata=row["metadata"] or {},
        flagged=bool(row["flagged"]),
        results=[PluginResult(r["plugin"], int(r["code"])) for r in row["results"] or []],
    )
