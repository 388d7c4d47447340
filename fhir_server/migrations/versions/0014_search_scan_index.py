"""a type's resources in pid order, for the adaptive search plan's scans

Revision ID: 0014_search_scan_index
Revises: 0013_history_compression
"""

from alembic import op

revision = "0014_search_scan_index"
down_revision = "0013_history_compression"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_resources_type_pid", "resources", ["res_type", "pid"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_resources_type_pid", table_name="resources")
