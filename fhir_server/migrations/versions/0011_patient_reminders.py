"""patient reminders: the queue of e-mail and text-message reminders for patients

Revision ID: 0011_patient_reminders
Revises: 0010_patient_accounts
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_patient_reminders"
down_revision = "0010_patient_accounts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "patient_reminders",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("patient", sa.String(length=128), nullable=False),
        sa.Column("due", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("channels", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("claimed_until", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("sent", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reason", "subject", name="uq_patient_reminders_reason_subject"),
    )
    op.create_index("ix_patient_reminders_due", "patient_reminders", ["status", "due"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_patient_reminders_due", table_name="patient_reminders")
    op.drop_table("patient_reminders")
