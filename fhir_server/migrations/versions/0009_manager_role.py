"""the manager role of a user account (the outcomes dashboard)

Revision ID: 0009_manager_role
Revises: 0008_outcomes

- `auth_users.is_manager`: the user manages their organization; the id_token says so in
  its `roles` claim (`python -m fhir_server users add --manager`).
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_manager_role"
down_revision = "0008_outcomes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("auth_users", sa.Column("is_manager", sa.Boolean(), nullable=False,
                                          server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("auth_users", "is_manager")
