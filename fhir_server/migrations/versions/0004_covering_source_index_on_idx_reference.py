"""covering source index on idx_reference

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_idx_ref_pid", table_name="idx_reference")
    op.create_index("ix_idx_ref_pid", "idx_reference",
                    ["pid", "param", "target_type", "target_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_idx_ref_pid", table_name="idx_reference")
    op.create_index("ix_idx_ref_pid", "idx_reference", ["pid", "param"], unique=False)
