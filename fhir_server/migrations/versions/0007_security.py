"""security: resource authorship, token ownership, login throttling

Revision ID: 0007_security
Revises: 0006_request_keys

- `resources.author_org`: the organization that wrote each resource (access policy).
- `auth_clients.resource_server`: only resource servers introspect other clients' tokens.
- `auth_tokens.username` (+ indexes by client and user): revoke a client's or a user's
  tokens at once when it is deactivated or re-registered.
- `auth_login_attempts`: failed sign-ins per account and per address (lockout).
- `auth_audit_links`: the entities, agents and patients each AuditEvent names (search).
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_security"
down_revision = "0006_request_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("resources", sa.Column("author_org", sa.String(length=128), nullable=True))
    op.create_index("ix_resources_author", "resources", ["author_org", "res_type"],
                    unique=False)
    op.add_column("auth_clients", sa.Column("resource_server", sa.Boolean(), nullable=False,
                                            server_default=sa.false()))
    op.add_column("auth_tokens", sa.Column("username", sa.String(length=200), nullable=True))
    op.create_index("ix_auth_tokens_client", "auth_tokens", ["client_id"], unique=False)
    op.create_index("ix_auth_tokens_username", "auth_tokens", ["username"], unique=False)
    op.create_table(
        "auth_login_attempts",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("locked_until", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "auth_audit_links",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("ref", sa.String(length=300), nullable=False),
        sa.PrimaryKeyConstraint("seq", "kind", "ref"),
    )
    op.create_index("ix_auth_audit_links_ref", "auth_audit_links", ["kind", "ref", "seq"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_auth_audit_links_ref", table_name="auth_audit_links")
    op.drop_table("auth_audit_links")
    op.drop_table("auth_login_attempts")
    op.drop_index("ix_auth_tokens_username", table_name="auth_tokens")
    op.drop_index("ix_auth_tokens_client", table_name="auth_tokens")
    op.drop_column("auth_tokens", "username")
    op.drop_column("auth_clients", "resource_server")
    op.drop_index("ix_resources_author", table_name="resources")
    op.drop_column("resources", "author_org")
