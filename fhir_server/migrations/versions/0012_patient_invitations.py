"""patient invitations: one-time codes with which patients create their accounts

Revision ID: 0012_patient_invitations
Revises: 0011_patient_reminders
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_patient_invitations"
down_revision = "0011_patient_reminders"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_invitations",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("patient", sa.String(length=128), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("code_hash"),
    )


def downgrade() -> None:
    op.drop_table("auth_invitations")
