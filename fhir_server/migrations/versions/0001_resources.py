"""Resources, their history, and conditional-create locks.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

PID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column("pid", PID, primary_key=True, autoincrement=True),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("body", sa.Text, nullable=True),
        sa.UniqueConstraint("res_type", "res_id", name="uq_resources_type_id"),
    )
    op.create_index("ix_resources_type_updated", "resources", ["res_type", "last_updated"])
    op.create_table(
        "resource_history",
        sa.Column("hid", PID, primary_key=True, autoincrement=True),
        sa.Column("pid", sa.BigInteger, nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.BigInteger, nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("body", sa.Text, nullable=True),
        sa.UniqueConstraint("res_type", "res_id", "version", name="uq_history_type_id_version"),
    )
    op.create_index("ix_history_updated", "resource_history", ["last_updated", "hid"])
    op.create_index(
        "ix_history_type_updated", "resource_history", ["res_type", "last_updated", "hid"]
    )
    op.create_table(
        "conditional_keys",
        sa.Column("res_type", sa.String(64), primary_key=True),
        sa.Column("criteria_hash", sa.String(64), primary_key=True),
        sa.Column("pid", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("conditional_keys")
    op.drop_table("resource_history")
    op.drop_table("resources")
