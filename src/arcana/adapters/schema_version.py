"""Whether a database's schema is already at the newest migration, without Alembic.

An embedded process migrates its SQLite file at every start (so one command runs the service).
Alembic, its script directory and the migration modules cost about 0.1 s of every CLI
command's start to find that there is nothing to do; reading the one row of
``alembic_version`` costs one statement. ``HEAD_REVISION`` names the newest migration;
``tests/unit/test_schema_version.py`` fails when a migration is added without it.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from arcana.adapters.database import Database

HEAD_REVISION = "0008"


async def schema_is_current(db: Database) -> bool:
    """True when ``alembic_version`` holds exactly ``HEAD_REVISION``; False when it holds
    anything else or does not exist yet (a new database), so Alembic runs."""
    try:
        async with db.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    except DBAPIError:
        return False
    return [row[0] for row in rows] == [HEAD_REVISION]
