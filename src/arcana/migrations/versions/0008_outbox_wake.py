"""events: no NOTIFY per outbox insert; a process without a relay of its own notifies

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # 0005's trigger sent ``NOTIFY arcana_outbox`` with every statement that inserted outbox
    # rows. A transaction that notifies holds a cluster-wide lock from its commit until it
    # ends (PostgreSQL serialises the notification queue that way), so concurrent commits
    # waited for each other's WAL flush one by one, and every listener woke per commit. A
    # process whose own relay runs wakes that relay in-process; only a process without one
    # notifies, from the committing transaction (``Database.local_relay``).
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS arcana_outbox_notify()")


def downgrade() -> None:
    # Back to 0005's trigger, created exactly as 0005 creates it (PostgreSQL only there too).
    path = Path(__file__).with_name("0005_events.py")
    spec = importlib.util.spec_from_file_location("arcana_migration_0005", path)
    assert spec is not None
    assert spec.loader is not None
    revision_0005 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(revision_0005)
    revision_0005.upgrade()
