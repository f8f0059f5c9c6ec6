"""events: no NOTIFY per outbox insert; a process without a relay of its own notifies

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

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
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE OR REPLACE FUNCTION arcana_outbox_notify() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('arcana_outbox', '');
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        """
        CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
        FOR EACH STATEMENT EXECUTE FUNCTION arcana_outbox_notify()
        """
    )
