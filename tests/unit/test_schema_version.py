"""The embedded start's shortcut past Alembic: it must know the newest migration, and a
database behind it must still be migrated."""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import text

from arcana.adapters.migrator import alembic_config, migrate
from arcana.adapters.schema_version import HEAD_REVISION, schema_is_current
from arcana.lifecycle import Lifecycle
from tests.conftest import base_settings


def test_head_revision_names_the_newest_migration() -> None:
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert scripts.get_heads() == [HEAD_REVISION]


async def outbox_columns(process: Lifecycle) -> set[str]:
    async with process.app.db.engine.connect() as conn:
        return {row[1] for row in await conn.execute(text("PRAGMA table_info(outbox)"))}


async def test_an_embedded_start_migrates_a_database_behind_the_newest_migration(
    tmp_path: Path,
) -> None:
    settings = base_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'old.db'}", var_dir=tmp_path / "var"
    )
    process = Lifecycle.build(settings)
    try:
        assert not await schema_is_current(process.app.db)  # no alembic_version table yet
        await migrate(process.app.db, "0006")
        assert not await schema_is_current(process.app.db)
        assert "trace_context" not in await outbox_columns(process)
        await process.start()
        assert await schema_is_current(process.app.db)
        assert "trace_context" in await outbox_columns(process)  # added by 0007
    finally:
        await process.stop()
