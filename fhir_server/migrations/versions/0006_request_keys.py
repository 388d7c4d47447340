"""request keys: remembered responses for idempotent retries

Revision ID: 0006_request_keys
Revises: 0005_web_drop_app_launches
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_request_keys"
down_revision = "0005_web_drop_app_launches"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_keys",
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("owner", "key"),
    )
    op.create_index("ix_request_keys_created", "request_keys", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_request_keys_created", table_name="request_keys")
    op.drop_table("request_keys")
