"""web apps: drop the app_launches table (launch state now lives in sealed cookies)

Revision ID: 0005_web_drop_app_launches
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_web_drop_app_launches"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("app_launches")


def downgrade() -> None:
    op.create_table(
        "app_launches",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("browser_hash", sa.String(length=64), nullable=False),
        sa.Column("iss", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("client_state", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("state_hash"),
    )
