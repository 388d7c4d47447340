"""Resource-server side: turn the `Authorization: Bearer` header into an AccessContext.

Missing, malformed, unknown, expired, revoked or wrong-audience tokens all give
401 with `WWW-Authenticate: Bearer error="invalid_token"` and an AuditEvent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fhir_server.auth.audit import OUTCOME_DENIED, build_audit_event
from fhir_server.auth.audit_store import AuditSink, db_sink
from fhir_server.auth.context import DEVELOPMENT, AccessContext
from fhir_server.auth.discovery import DEFAULT_FHIR_PATH
from fhir_server.auth.tokens import context_from_grant, lookup_token
from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.storage.db import Database

log = logging.getLogger(__name__)
_warned = False


def normalize_base(url: str) -> str:
    """Audience comparison form of a FHIR base URL (no trailing slash)."""
    return url.rstrip("/")


def audience_matches(
    aud: str, headers: Mapping[str, str], settings: Settings, base_url: str | None = None
) -> bool:
    """Is a token's `aud` this FHIR endpoint? (see `authenticate` for the expected value)"""
    expected = base_url or settings.base_url
    if expected:
        return normalize_base(aud) == normalize_base(expected)
    host = headers.get("Host") or headers.get("host") or ""
    _, _, rest = normalize_base(aud).partition("://")
    return bool(host) and rest.lower() == f"{host.lower()}{DEFAULT_FHIR_PATH}"


def auth_disabled(settings: Settings) -> bool:
    """True when FHIR_SERVER_AUTH=off (local development only)."""
    return settings.auth_mode.strip().lower() in ("off", "false", "0", "no")


def warn_auth_disabled() -> None:
    """Log, once per process, the loud warning that authorization is switched off."""
    global _warned
    if not _warned:
        _warned = True
        log.warning(
            "\n%s\n!! FHIR_SERVER_AUTH=off: EVERY REQUEST IS SERVED WITHOUT AUTHORIZATION.   !!\n"
            "!! Local development only. Never expose this server to a network or real data. !!"
            "\n%s", "!" * 82, "!" * 82,
        )


def invalid_token(settings: Settings, description: str) -> FhirError:
    """The 401 FhirError carrying the RFC 6750 challenge."""
    desc = description.replace('"', "'")
    realm = normalize_base(settings.base_url) or "fhir"
    challenge = f'Bearer realm="{realm}", error="invalid_token", error_description="{desc}"'
    return FhirError(401, "login", description, headers={"WWW-Authenticate": challenge})


def bearer_value(headers: Mapping[str, str]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None if absent/malformed."""
    raw = headers.get("Authorization") or headers.get("authorization")
    if not raw:
        return None
    scheme, _, value = raw.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or " " in value or len(value) > 4096:
        return None
    return value


def authenticate(
    headers: Mapping[str, str],
    db: Database,
    settings: Settings,
    *,
    audit: AuditSink | None = None,
    address: str | None = None,
    base_url: str | None = None,
) -> AccessContext:
    """Validate the bearer token of a FHIR request and return its AccessContext.

    The token's audience must equal `base_url` (the request's effective FHIR base), else
    `settings.base_url`, else (derive-from-Host mode) `<Host header>/fhir`.
    Raises FhirError(401) (with `WWW-Authenticate`) on any token problem; the denial is
    recorded as an AuditEvent through `audit` (default: the database audit log).
    """
    if auth_disabled(settings):
        warn_auth_disabled()
        return DEVELOPMENT
    value = bearer_value(headers)
    problem: str | None = None
    ctx: AccessContext | None = None
    client_id: str | None = None
    if value is None:
        has_header = bool(headers.get("Authorization") or headers.get("authorization"))
        problem = "Malformed Authorization header" if has_header else "Missing bearer token"
    else:
        with db.read() as conn:
            record = lookup_token(conn, value, "access")
        if record is None:
            problem = "The access token is unknown, expired or revoked"
        else:
            client_id = record.client_id
            aud = record.grant.get("aud", "")
            if not audience_matches(aud, headers, settings, base_url):
                problem = f"The access token was issued for another audience ({aud})"
            else:
                ctx = context_from_grant(record)
    if ctx is not None:
        return ctx
    assert problem is not None
    (audit or db_sink(db))(
        build_audit_event(
            None, "authenticate", OUTCOME_DENIED, description=f"401 invalid_token: {problem}",
            client_id=client_id, address=address, authentication=True,
        )
    )
    raise invalid_token(settings, problem)
