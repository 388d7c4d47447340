"""Tables of the authorization server, on the shared `metadata`.

Secrets (tokens, codes, launch handles, sessions, client secrets) are never stored in
clear: only their SHA-256 (random high-entropy values) or a scrypt hash (passwords,
client secrets). Times are epoch seconds (integers).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text

from fhir_server.storage.schema import metadata

clients = Table(
    "auth_clients",
    metadata,
    Column("client_id", String(200), primary_key=True),
    Column("name", String(200), nullable=True),
    Column("kind", String(16), nullable=False),  # public | symmetric | asymmetric
    Column("organization", String(200), nullable=False),  # Organization/x
    Column("scope", Text, nullable=False),  # maximum scope
    Column("secret_hash", Text, nullable=True),
    Column("jwks", Text, nullable=True),  # inline JWKS JSON
    Column("jwks_url", Text, nullable=True),
    Column("redirect_uris", Text, nullable=False, default="[]"),  # JSON list
    Column("launch_uri", Text, nullable=True),
    Column("active", Boolean, nullable=False, default=True),
    Column("created", BigInteger, nullable=False),
    # a resource server may introspect any client's tokens; other clients only their own
    Column("resource_server", Boolean, nullable=False, default=False),
)

users = Table(
    "auth_users",
    metadata,
    Column("username", String(200), primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("fhir_user", String(200), nullable=False),  # Practitioner/x, or Patient/x
    Column("practitioner_role", String(200), nullable=True),  # PractitionerRole/x
    Column("organization", String(200), nullable=True),  # Organization/x (None: a patient)
    Column("is_admin", Boolean, nullable=False, default=False),
    # manager of their organization: may use the outcomes dashboard (role in the id_token)
    Column("is_manager", Boolean, nullable=False, default=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("created", BigInteger, nullable=False),
)

sessions = Table(
    "auth_sessions",
    metadata,
    Column("sid_hash", String(64), primary_key=True),
    Column("username", String(200), nullable=False),
    Column("expires", BigInteger, nullable=False),
)

pending = Table(  # an /authorize request waiting for login, patient choice and approval
    "auth_pending",
    metadata,
    Column("rid", String(64), primary_key=True),
    Column("params", Text, nullable=False),  # JSON of the validated request
    Column("expires", BigInteger, nullable=False),
)

codes = Table(
    "auth_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(200), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("grant", Text, nullable=False),  # JSON: scope, user, launch context
    Column("expires", BigInteger, nullable=False),
    Column("used", Boolean, nullable=False, default=False),
)

launches = Table(
    "auth_launches",
    metadata,
    Column("launch_hash", String(64), primary_key=True),
    Column("client_id", String(200), nullable=False),
    Column("username", String(200), nullable=False),
    Column("context", Text, nullable=False),  # JSON: patient, encounter, fhirContext, ...
    Column("expires", BigInteger, nullable=False),
)

tokens = Table(  # access and refresh tokens
    "auth_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("token_id", String(32), nullable=False, unique=True),
    Column("kind", String(8), nullable=False),  # access | refresh
    Column("grant_id", String(32), nullable=False),  # shared by a grant's tokens
    Column("client_id", String(200), nullable=False),
    Column("grant", Text, nullable=False),  # JSON: scope, user, context, aud, ...
    Column("issued", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("username", String(200), nullable=True),  # the user a user token acts for
)
Index("ix_auth_tokens_grant", tokens.c.grant_id)
Index("ix_auth_tokens_client", tokens.c.client_id)
Index("ix_auth_tokens_username", tokens.c.username)

used_jti = Table(
    "auth_used_jti",
    metadata,
    Column("iss", String(200), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires", BigInteger, nullable=False),
)

signing_keys = Table(
    "auth_signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("private_jwk", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False, default=True),
)

audit_log = Table(  # AuditEvents of the authorization layer (denials, token grants)
    "auth_audit_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("recorded", BigInteger, nullable=False),
    Column("outcome", String(2), nullable=False),
    Column("client_id", String(200), nullable=True),
    Column("body", Text, nullable=False),  # AuditEvent JSON
)
Index("ix_auth_audit_recorded", audit_log.c.recorded)

audit_links = Table(  # what each AuditEvent names: for AuditEvent?entity=, ?agent=, ?patient=
    "auth_audit_links",
    metadata,
    Column("seq", Integer, primary_key=True),
    Column("kind", String(8), primary_key=True),  # entity | agent | patient
    Column("ref", String(300), primary_key=True),  # Type/id, or a client id for agents
)
Index("ix_auth_audit_links_ref", audit_links.c.kind, audit_links.c.ref, audit_links.c.seq)

login_attempts = Table(  # failed sign-ins per account ("user:x") and per address ("addr:ip")
    "auth_login_attempts",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_start", BigInteger, nullable=False),
    Column("locked_until", BigInteger, nullable=False),
)
