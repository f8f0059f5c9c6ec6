"""products: catalog table with list indexes

Revision ID: 0003
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Price: exact NUMERIC(12,2) on PostgreSQL; integer cents on SQLite (no exact decimal there).
    op.create_table(
        "products",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "price", sa.Numeric(12, 2).with_variant(sa.BigInteger(), "sqlite"), nullable=False
        ),
        sa.Column("stock", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(100), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_products"),
        sa.CheckConstraint("stock >= 0", name="ck_products_stock_non_negative"),
        sa.CheckConstraint("price >= 0", name="ck_products_price_non_negative"),
    )
    op.create_index("ix_products_created_at_id", "products", ["created_at", "id"])
    op.create_index(
        "ix_products_category_created_at_id", "products", ["category", "created_at", "id"]
    )
    op.create_index("ix_products_status_created_at_id", "products", ["status", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_products_status_created_at_id", table_name="products")
    op.drop_index("ix_products_category_created_at_id", table_name="products")
    op.drop_index("ix_products_created_at_id", table_name="products")
    op.drop_table("products")
