"""patient accounts: a user may be a patient (fhir_user Patient/x) without an organization

Revision ID: 0009_patient_accounts
Revises: 0008_outcomes
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_patient_accounts"
down_revision = "0008_outcomes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("auth_users", schema=None) as batch_op:
        batch_op.alter_column("organization", existing_type=sa.String(length=200),
                              nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM auth_users WHERE organization IS NULL")
    with op.batch_alter_table("auth_users", schema=None) as batch_op:
        batch_op.alter_column("organization", existing_type=sa.String(length=200),
                              nullable=False)
