"""The token endpoint: authorization_code (PKCE S256), refresh_token and client_credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from sqlalchemy import Connection, select, update

from fhir_server.auth.auth_schema import codes
from fhir_server.auth.client_auth import (
    JtiRecord,
    JwksFetcher,
    authenticate_client,
    jti_errors,
    remember_jti,
)
from fhir_server.auth.discovery import AuthUrls
from fhir_server.auth.errors import OAuthError, invalid_grant, invalid_request, invalid_scope
from fhir_server.auth.keys import load_keys
from fhir_server.auth.registry import Client
from fhir_server.auth.scopes import ScopeSet, is_subset, negotiate, parse_scopes
from fhir_server.auth.tokens import (
    ACCESS_LIFETIME,
    BACKEND_LIFETIME,
    OFFLINE_REFRESH_LIFETIME,
    ONLINE_REFRESH_LIFETIME,
    digest,
    issue_token,
    lookup_token,
    revoke_grant,
    revoke_token_id,
    sign_id_token,
)
from fhir_server.storage.db import Database

VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
LAUNCH_FIELDS = ("patient", "encounter", "fhirContext", "need_patient_banner",
                 "smart_style_url", "intent", "tenant")


def s256(verifier: str) -> str:
    """The PKCE S256 code challenge of a verifier."""
    digest_ = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest_).rstrip(b"=").decode()


class TokenService:
    """Runs token requests; returns (client_id or None, JSON body) or raises OAuthError."""

    def __init__(
        self, db: Database, fetcher: JwksFetcher,
        audit_in_tx: Callable[[Connection, Client, str, str], None] | None = None,
    ) -> None:
        """`audit_in_tx(conn, client, grant_type, scope)` records a successful grant in the
        transaction that stores the token (one write instead of two)."""
        self.db, self.fetcher, self.audit_in_tx = db, fetcher, audit_in_tx

    def _audit(self, conn: Connection, client: Client, grant_type: str, scope: str) -> None:
        if self.audit_in_tx is not None:
            self.audit_in_tx(conn, client, grant_type, scope)

    def handle(
        self, form: Mapping[str, str], headers: Mapping[str, str], urls: AuthUrls
    ) -> tuple[Client, dict]:
        """Authenticate the client and run the grant; OAuthError on any failure."""
        grant_type = form.get("grant_type")
        handler = {
            "authorization_code": self._authorization_code,
            "refresh_token": self._refresh,
            "client_credentials": self._client_credentials,
        }.get(grant_type or "")
        if handler is None:
            raise OAuthError("unsupported_grant_type", f"Unsupported grant_type {grant_type!r}")
        deferred: list[JtiRecord] = []
        client = authenticate_client(self.db, form, headers, urls.token, self.fetcher, deferred)
        try:
            return client, handler(client, form, urls, deferred)
        except OAuthError:
            if deferred:  # a failed request still spends its assertion
                with jti_errors(), self.db.write() as conn:
                    remember_jti(conn, deferred.pop())
            raise

    # -- authorization_code ------------------------------------------------------------
    def _authorization_code(
        self, client: Client, form: Mapping[str, str], urls: AuthUrls,
        jti: list[JtiRecord],
    ) -> dict[str, Any]:
        code = form.get("code") or ""
        verifier = form.get("code_verifier") or ""
        replayed = False
        with self.db.write() as conn:
            row = conn.execute(select(codes).where(codes.c.code_hash == digest(code))).first()
            if row is not None:
                claimed = conn.execute(
                    update(codes).where(codes.c.code_hash == row.code_hash, codes.c.used.is_(False))
                    .values(used=True)
                ).rowcount
                if not claimed:  # replay: revoke what the code produced (RFC 6749 §4.1.2)
                    revoke_grant(conn, orjson.loads(row.grant)["grant_id"])
                    replayed = True
        if row is None:
            raise invalid_grant("Unknown authorization code")
        if replayed:
            raise invalid_grant("Authorization code already used")
        grant = orjson.loads(row.grant)
        if row.expires < time.time():
            raise invalid_grant("Authorization code expired")
        if row.client_id != client.client_id:
            raise invalid_grant("Authorization code was issued to another client")
        if form.get("redirect_uri") != row.redirect_uri:
            raise invalid_grant("redirect_uri does not match the authorization request")
        if not VERIFIER.match(verifier):
            raise invalid_grant("code_verifier is required (43-128 unreserved characters)")
        if not hmac.compare_digest(s256(verifier), row.code_challenge):
            raise invalid_grant("code_verifier does not match the S256 code_challenge")
        return self._issue_user_tokens(client, grant, urls, True, jti=jti)

    def _issue_user_tokens(
        self, client: Client, grant: dict[str, Any], urls: AuthUrls, new_refresh: bool,
        scope: ScopeSet | None = None, jti: list[JtiRecord] | None = None,
    ) -> dict[str, Any]:
        granted = scope or parse_scopes(grant["scope"])
        access_grant = {**grant, "scope": granted.render()}
        with jti_errors(), self.db.write() as conn:
            if jti:
                remember_jti(conn, jti.pop())
            access = issue_token(
                conn, "access", client.client_id, access_grant, ACCESS_LIFETIME,
                grant["grant_id"],
            )
            refresh = None
            original = parse_scopes(grant["scope"])  # a refresh keeps the original grant
            if new_refresh and (original.has("offline_access") or original.has("online_access")):
                lifetime = (
                    OFFLINE_REFRESH_LIFETIME if original.has("offline_access")
                    else ONLINE_REFRESH_LIFETIME
                )
                refresh = issue_token(
                    conn, "refresh", client.client_id, grant, lifetime, grant["grant_id"]
                )
            self._audit(conn, client, "authorization_code/refresh_token", granted.render())
        body: dict[str, Any] = {
            "access_token": access.value,
            "token_type": "Bearer",
            "expires_in": ACCESS_LIFETIME,
            "scope": granted.render(),
        }
        if refresh:
            body["refresh_token"] = refresh.value
        for name in LAUNCH_FIELDS:
            if grant.get(name) is not None:
                body[name] = grant[name]
        if granted.has("openid") and (granted.has("fhirUser") or granted.has("profile")):
            body["id_token"] = self._id_token(client, grant, urls)
        return body

    def _id_token(self, client: Client, grant: dict[str, Any], urls: AuthUrls) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": urls.issuer,
            "sub": grant["user"],
            "aud": client.client_id,
            "iat": now,
            "exp": now + ACCESS_LIFETIME,
            "fhirUser": f"{urls.fhir_base}/{grant['fhir_user']}",
        }
        if grant.get("nonce"):
            claims["nonce"] = grant["nonce"]
        if grant.get("roles"):
            claims["roles"] = list(grant["roles"])  # administrator, manager (see README)
        return sign_id_token(load_keys(self.db), claims)

    # -- refresh_token -----------------------------------------------------------------
    def _refresh(
        self, client: Client, form: Mapping[str, str], urls: AuthUrls,
        jti: list[JtiRecord],
    ) -> dict[str, Any]:
        value = form.get("refresh_token") or ""
        with self.db.read() as conn:
            record = lookup_token(conn, value, "refresh")
        if record is None:
            raise invalid_grant("Refresh token unknown, expired or revoked")
        if record.client_id != client.client_id:
            raise invalid_grant("Refresh token was issued to another client")
        original = parse_scopes(record.grant["scope"])
        scope = original
        if form.get("scope"):
            scope = parse_scopes(form["scope"])
            if not is_subset(scope, original):
                raise invalid_scope("Requested scope exceeds the original grant")
        with self.db.write() as conn:  # rotate: the old refresh token is spent
            revoke_token_id(conn, record.token_id)
        return self._issue_user_tokens(client, record.grant, urls, True, scope=scope, jti=jti)

    # -- client_credentials (SMART Backend Services) ----------------------------------
    def _client_credentials(
        self, client: Client, form: Mapping[str, str], urls: AuthUrls,
        jti: list[JtiRecord],
    ) -> dict[str, Any]:
        if client.kind != "asymmetric":
            raise OAuthError(
                "unauthorized_client",
                "client_credentials requires a client registered for private_key_jwt",
            )
        requested = parse_scopes(form.get("scope") or "")
        system_only = ScopeSet(tuple(s for s in requested.resource if s.context == "system"))
        granted = negotiate(system_only, client.scope)
        if not granted.resource:
            raise invalid_scope("No requested system/ scope is within the client's registration")
        grant = {
            "scope": granted.render(),
            "organization": client.organization,
            "aud": urls.fhir_base,
            "grant_id": secrets.token_hex(16),
        }
        with jti_errors(), self.db.write() as conn:
            if jti:
                remember_jti(conn, jti.pop())  # one transaction: jti, token and audit
            access = issue_token(
                conn, "access", client.client_id, grant, BACKEND_LIFETIME, grant["grant_id"]
            )
            self._audit(conn, client, "client_credentials", granted.render())
        return {
            "access_token": access.value,
            "token_type": "Bearer",
            "expires_in": BACKEND_LIFETIME,
            "scope": granted.render(),
        }


def introspect(db: Database, urls: AuthUrls, token: str, *, caller: str,
               resource_server: bool = False) -> dict[str, Any]:
    """RFC 7662 / SMART introspection response for an access or refresh token. A client
    learns only about its own tokens (`caller`); a registered resource server about any.
    Anything else is answered `{"active": false}`, like an unknown token."""
    if not token:
        raise invalid_request("token is required")
    with db.read() as conn:
        record = lookup_token(conn, token)
    if record is None or (record.client_id != caller and not resource_server):
        return {"active": False}
    g = record.grant
    body: dict[str, Any] = {
        "active": True,
        "scope": g.get("scope", ""),
        "client_id": record.client_id,
        "exp": record.expires,
        "iat": record.issued,
        "token_type": "Bearer" if record.kind == "access" else "refresh_token",
        "aud": g.get("aud"),
    }
    if g.get("user"):
        body.update({
            "iss": urls.issuer, "sub": g["user"],
            "fhirUser": f"{urls.fhir_base}/{g['fhir_user']}",
        })
        if g.get("roles"):
            body["roles"] = list(g["roles"])
    for name in LAUNCH_FIELDS:
        if g.get(name) is not None:
            body[name] = g[name]
    return body


def revoke(db: Database, client: Client, token: str) -> None:
    """RFC 7009: revoke a token of this client; a refresh token takes its whole grant along."""
    with db.write() as conn:
        record = lookup_token(conn, token)
        if record is None or record.client_id != client.client_id:
            return  # RFC 7009 §2.2: respond 200 for invalid tokens
        if record.kind == "refresh":
            revoke_grant(conn, record.grant_id)
        else:
            revoke_token_id(conn, record.token_id)
