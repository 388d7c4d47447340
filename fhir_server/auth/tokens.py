"""Access and refresh tokens: opaque random values, stored as SHA-256 in `auth_tokens`.

Design choice: opaque tokens + one primary-key lookup instead of self-contained JWTs.
Validation is a single indexed SELECT (well under 1 ms, see bench/), revocation is
immediate in every process, and a forged, tampered, `alg: none` or re-signed JWT can never
be accepted because nothing but the database decides what a token means. id_tokens are
RS256 JWTs signed with the server key (`keys.py`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
from joserfc import jwt
from sqlalchemy import Connection, bindparam, insert, select, update

from fhir_server.auth.auth_schema import tokens
from fhir_server.auth.context import AccessContext
from fhir_server.auth.keys import ServerKeys
from fhir_server.auth.scopes import parse_scopes, patient_account_scope

ACCESS_LIFETIME = 3600  # user-delegated access tokens (SMART: SHOULD be <= 1 hour)
BACKEND_LIFETIME = 300  # Backend Services access tokens (SMART: SHOULD be <= 300 s)
OFFLINE_REFRESH_LIFETIME = 90 * 24 * 3600
ONLINE_REFRESH_LIFETIME = 12 * 3600


def digest(value: str) -> str:
    """SHA-256 hex of a high-entropy secret (tokens, codes, launch handles, sessions)."""
    return hashlib.sha256(value.encode()).hexdigest()


def new_secret() -> str:
    """A URL-safe random value with 256 bits of entropy."""
    return secrets.token_urlsafe(32)


_INSERT = insert(tokens)


@dataclass(frozen=True)
class IssuedToken:
    value: str
    token_id: str
    expires: int


@dataclass(frozen=True)
class TokenRecord:
    """A stored token that is currently active."""

    token_id: str
    kind: str
    grant_id: str
    client_id: str
    grant: dict[str, Any]
    issued: int
    expires: int


def issue_token(
    conn: Connection,
    kind: str,
    client_id: str,
    grant: dict[str, Any],
    lifetime: int,
    grant_id: str | None = None,
    now: int | None = None,
) -> IssuedToken:
    """Store and return a new access or refresh token for `grant`."""
    now = int(time.time()) if now is None else now
    value = new_secret()
    token_id = secrets.token_hex(16)
    conn.execute(_INSERT, {
        "token_hash": digest(value), "token_id": token_id, "kind": kind,
        "grant_id": grant_id or secrets.token_hex(16), "client_id": client_id,
        "grant": orjson.dumps(grant).decode(), "issued": now, "expires": now + lifetime,
        "revoked": False, "username": grant.get("user"),
    })
    return IssuedToken(value, token_id, now + lifetime)


_LOOKUP = select(
    tokens.c.token_id, tokens.c.kind, tokens.c.grant_id, tokens.c.client_id,
    tokens.c.grant, tokens.c.issued, tokens.c.expires, tokens.c.revoked,
).where(tokens.c.token_hash == bindparam("token_hash"))


def lookup_token(conn: Connection, value: str, kind: str | None = None) -> TokenRecord | None:
    """The active (not expired, not revoked) token with this value, or None."""
    row = conn.execute(_LOOKUP, {"token_hash": digest(value)}).first()
    if row is None or row.revoked or row.expires <= time.time():
        return None
    if kind is not None and row.kind != kind:
        return None
    return TokenRecord(
        row.token_id, row.kind, row.grant_id, row.client_id, orjson.loads(row.grant),
        row.issued, row.expires,
    )


def revoke_grant(conn: Connection, grant_id: str) -> int:
    """Revoke every token of a grant; returns the number of tokens revoked."""
    result = conn.execute(
        update(tokens).where(tokens.c.grant_id == grant_id, tokens.c.revoked.is_(False))
        .values(revoked=True)
    )
    return result.rowcount or 0


def revoke_client_tokens(conn: Connection, client_id: str) -> int:
    """Revoke every token of a client (deactivated or re-registered): effective at once."""
    result = conn.execute(update(tokens).where(
        tokens.c.client_id == client_id, tokens.c.revoked.is_(False)).values(revoked=True))
    return result.rowcount or 0


def revoke_user_tokens(conn: Connection, username: str) -> int:
    """Revoke every token issued for a user (deactivated or re-registered)."""
    result = conn.execute(update(tokens).where(
        tokens.c.username == username, tokens.c.revoked.is_(False)).values(revoked=True))
    return result.rowcount or 0


def revoke_token_id(conn: Connection, token_id: str) -> None:
    """Revoke one token by its id."""
    conn.execute(update(tokens).where(tokens.c.token_id == token_id).values(revoked=True))


def context_from_grant(record: TokenRecord) -> AccessContext:
    """The AccessContext an access token stands for. A patient account's token acts for its
    own Patient with patient scopes only, whatever its grant says."""
    g = record.grant
    fhir_user = str(g.get("fhir_user") or "")
    scopes = parse_scopes(g.get("scope", ""))
    patient = g.get("patient")
    if fhir_user.startswith("Patient/"):
        scopes, patient = patient_account_scope(scopes), fhir_user.split("/", 1)[1]
    return AccessContext(
        client_id=record.client_id,
        user=g.get("user"),
        fhir_user=g.get("fhir_user"),
        organization=None if fhir_user.startswith("Patient/") else g.get("organization"),
        patient=patient,
        encounter=g.get("encounter"),
        scopes=scopes,
        token_id=record.token_id,
        fhir_context=tuple(g.get("fhirContext") or ()),
        is_admin=bool(g.get("is_admin")) and not fhir_user.startswith("Patient/"),
    )


def sign_id_token(keys: ServerKeys, claims: dict[str, Any]) -> str:
    """An RS256 id_token with the active key's `kid`."""
    header = {"alg": "RS256", "kid": keys.active.kid, "typ": "JWT"}
    return jwt.encode(header, claims, keys.active, algorithms=["RS256"])
