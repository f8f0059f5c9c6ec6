"""observability: trace context stored with outbox rows and jobs

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: instant on PostgreSQL however large the tables are.
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("trace_context", sa.String(256), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("trace_context", sa.String(256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("trace_context")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("trace_context")
