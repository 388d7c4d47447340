"""patient accounts: a user may be a patient (fhir_user Patient/x) without an organization

Revision ID: 0010_patient_accounts
Revises: 0009_manager_role
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_patient_accounts"
down_revision = "0009_manager_role"
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
