"""Authorization endpoint logic: request validation, sessions, launch handles and codes.

HTTP-free: `server.py` maps these functions to routes and pages.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from sqlalchemy import delete, insert, select

from fhir_server.auth import login_store
from fhir_server.auth.auth_schema import codes, launches, pending, sessions
from fhir_server.auth.discovery import AuthUrls
from fhir_server.auth.registry import Client, User, get_client, get_user
from fhir_server.auth.scopes import ScopeSet, negotiate, parse_scopes, patient_account_scope
from fhir_server.auth.tokens import digest, new_secret
from fhir_server.storage.db import Database

CODE_LIFETIME = 60
PENDING_LIFETIME = 600
LAUNCH_LIFETIME = 300
SESSION_LIFETIME = 8 * 3600
CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")


class AuthorizeError(Exception):
    """An /authorize failure: shown as a page when the redirect URI is not trusted (yet),
    else sent back to the client as `redirect_uri?error=...&state=...`."""

    def __init__(self, error: str, description: str, redirect: str | None = None,
                 state: str | None = None) -> None:
        super().__init__(description)
        self.error, self.description = error, description
        self.redirect, self.state = redirect, state

    def location(self) -> str:
        query = {"error": self.error, "error_description": self.description}
        if self.state is not None:
            query["state"] = self.state
        return append_query(self.redirect or "", query)


def append_query(url: str, params: dict[str, str]) -> str:
    """`url` with `params` added to its query string."""
    return url + ("&" if "?" in url else "?") + urlencode(params)


@dataclass(frozen=True)
class PendingRequest:
    """A validated authorization request waiting for login / patient choice / approval."""

    rid: str
    client_id: str
    redirect_uri: str
    state: str
    scope: str  # granted (negotiated) scope
    code_challenge: str
    nonce: str | None
    launch: dict[str, Any] | None  # EHR launch context (with "username")
    needs_patient: bool

    def to_json(self) -> str:
        return orjson.dumps(self.__dict__).decode()


def _user_scope_ceiling(client: Client) -> ScopeSet:
    """Scopes an app may obtain through /authorize (no system/ scopes there)."""
    return ScopeSet(
        tuple(s for s in client.scope.resource if s.context != "system"), client.scope.other
    )


def validate_request(db: Database, urls: AuthUrls, params: dict[str, str]) -> PendingRequest:
    """Validate an authorization request (GET query or POST form) and store it as pending."""
    with db.read() as conn:
        client = get_client(conn, params.get("client_id") or "")
    if client is None:
        raise AuthorizeError("invalid_client", "Unknown client_id")
    redirect = params.get("redirect_uri") or ""
    if redirect not in client.redirect_uris:
        raise AuthorizeError("invalid_request", "redirect_uri is not registered for this client")
    state = params.get("state")

    def fail(error: str, description: str) -> AuthorizeError:
        return AuthorizeError(error, description, redirect, state)

    if params.get("response_type") != "code":
        raise fail("unsupported_response_type", "response_type must be 'code'")
    if not state:
        raise fail("invalid_request", "state is required")
    if params.get("code_challenge_method") != "S256":
        raise fail("invalid_request", "PKCE is required with code_challenge_method=S256")
    if not CHALLENGE.match(params.get("code_challenge") or ""):
        raise fail("invalid_request", "code_challenge must be a base64url S256 digest")
    aud = (params.get("aud") or params.get("resource") or "").rstrip("/")
    if aud != urls.fhir_base:
        raise fail("invalid_request", f"aud must be this FHIR server: {urls.fhir_base}")
    requested = parse_scopes(params.get("scope") or "")
    granted = negotiate(requested, _user_scope_ceiling(client))
    if not granted.resource and not granted.has("openid"):
        raise fail("invalid_scope", "None of the requested scopes can be granted to this client")
    launch_ctx = None
    if params.get("launch"):
        if not requested.has("launch"):
            raise fail("invalid_scope", "An EHR launch must request the 'launch' scope")
        launch_ctx = _take_launch(db, params["launch"], client.client_id)
        if launch_ctx is None:
            raise fail("invalid_request", "Unknown or expired launch")
    elif requested.has("launch"):
        raise fail("invalid_request", "The 'launch' scope needs a launch parameter")
    needs_patient = launch_ctx is None and (
        granted.has("launch/patient") or "patient" in granted.contexts()
    )
    if launch_ctx is not None and "patient" in granted.contexts() and not launch_ctx.get("patient"):
        raise fail("invalid_request", "patient/ scopes need a launch with a patient")
    req = PendingRequest(
        rid=secrets.token_urlsafe(24), client_id=client.client_id, redirect_uri=redirect,
        state=state, scope=granted.render(), code_challenge=params["code_challenge"],
        nonce=params.get("nonce"), launch=launch_ctx, needs_patient=needs_patient,
    )
    now = int(time.time())
    with db.write() as conn:
        conn.execute(delete(pending).where(pending.c.expires < now))
        conn.execute(insert(pending).values(rid=req.rid, params=req.to_json(),
                                            expires=now + PENDING_LIFETIME))
    return req


def load_pending(db: Database, rid: str) -> PendingRequest | None:
    """A pending request that has not expired, or None."""
    with db.read() as conn:
        row = conn.execute(select(pending).where(pending.c.rid == rid)).first()
    if row is None or row.expires < time.time():
        return None
    return PendingRequest(**orjson.loads(row.params))


def drop_pending(db: Database, rid: str) -> None:
    with db.write() as conn:
        conn.execute(delete(pending).where(pending.c.rid == rid))


# -- sessions ---------------------------------------------------------------------------
class LockedOut(Exception):
    """Too many failed sign-ins for this account or address: try again later."""

    def __init__(self, seconds: int) -> None:
        super().__init__(f"locked for {seconds} s")
        self.seconds = seconds


def login(db: Database, username: str, password: str, *, address: str | None = None,
          throttle: login_store.Throttle = login_store.Throttle()) -> tuple[str, User] | None:
    """Check credentials; on success create a session and return (session id, user).
    Failures count against the account and the address; a locked one raises LockedOut
    (even with the right password)."""
    from fhir_server.auth.passwords import verify_password

    keys = [login_store.account_key(username)] + (
        [login_store.address_key(address)] if address else [])
    with db.read() as conn:
        user = get_user(conn, username)
        wait = login_store.locked_for(conn, keys)
    if wait:
        raise LockedOut(wait)
    if not verify_password(password, user.password_hash if user else None) or user is None:
        with db.write() as conn:
            login_store.record_failure(conn, keys[0], throttle.max_failures, throttle)
            if address:
                login_store.record_failure(conn, keys[1], throttle.max_failures
                                           * login_store.ADDRESS_FACTOR, throttle)
        return None
    sid = new_secret()
    with db.write() as conn:
        login_store.clear(conn, keys[0])
        conn.execute(delete(sessions).where(sessions.c.expires < time.time()))
        conn.execute(insert(sessions).values(
            sid_hash=digest(sid), username=user.username,
            expires=int(time.time()) + SESSION_LIFETIME,
        ))
    return sid, user


def session_user(db: Database, sid: str | None) -> User | None:
    """The user of a live session cookie, or None."""
    if not sid:
        return None
    with db.read() as conn:
        row = conn.execute(select(sessions).where(sessions.c.sid_hash == digest(sid))).first()
        if row is None or row.expires < time.time():
            return None
        return get_user(conn, row.username)


def logout(db: Database, sid: str | None) -> None:
    """End a session."""
    if sid:
        with db.write() as conn:
            conn.execute(delete(sessions).where(sessions.c.sid_hash == digest(sid)))


def csrf_token(sid: str, rid: str) -> str:
    """Anti-CSRF value binding an approval form to the browser session."""
    return hashlib.sha256(f"{sid}:{rid}".encode()).hexdigest()


# -- EHR launch -------------------------------------------------------------------------
def create_launch(
    db: Database, user: User, client_id: str, patient: str | None, encounter: str | None,
    fhir_context: list[dict[str, str]] | None = None, intent: str | None = None,
) -> str:
    """Create a launch handle bound to (client, user, patient, encounter, fhirContext)."""
    handle = secrets.token_hex(20)  # URL-safe: no '+' or '/'
    context: dict[str, Any] = {"username": user.username, "patient": patient,
                               "encounter": encounter, "fhirContext": fhir_context or None,
                               "intent": intent}
    with db.write() as conn:
        conn.execute(delete(launches).where(launches.c.expires < time.time()))
        conn.execute(insert(launches).values(
            launch_hash=digest(handle), client_id=client_id, username=user.username,
            context=orjson.dumps(context).decode(), expires=int(time.time()) + LAUNCH_LIFETIME,
        ))
    return handle


def _take_launch(db: Database, handle: str, client_id: str) -> dict[str, Any] | None:
    with db.write() as conn:
        row = conn.execute(select(launches).where(launches.c.launch_hash == digest(handle))).first()
        if row is None or row.expires < time.time() or row.client_id != client_id:
            return None
        conn.execute(delete(launches).where(launches.c.launch_hash == row.launch_hash))
    return orjson.loads(row.context)


# -- codes ------------------------------------------------------------------------------
def issue_code(
    db: Database, urls: AuthUrls, req: PendingRequest, user: User, patient: str | None,
) -> str:
    """Create the authorization code for an approved request; returns the redirect URL.
    A patient account always acts for its own Patient, with patient scopes only."""
    launch = req.launch or {}
    scope = parse_scopes(req.scope)
    if user.patient_id is not None:
        scope = patient_account_scope(scope)
        launch = {}
        patient = user.patient_id
    grant: dict[str, Any] = {
        "grant_id": secrets.token_hex(16),
        "scope": scope.render(),
        "user": user.username,
        "fhir_user": user.fhir_user,
        "organization": user.organization,
        "is_admin": user.is_admin,
        "roles": user.roles,
        "aud": urls.fhir_base,
        "nonce": req.nonce,
    }
    if scope.contexts() & {"patient"} or scope.has("launch/patient") or launch.get("patient") \
            or user.patient_id is not None:
        grant["patient"] = launch.get("patient") or patient
    if launch.get("encounter"):
        grant["encounter"] = launch["encounter"]
    if launch.get("fhirContext"):
        grant["fhirContext"] = launch["fhirContext"]
    if launch.get("intent"):
        grant["intent"] = launch["intent"]
    grant["need_patient_banner"] = not launch
    grant["smart_style_url"] = urls.style
    code = new_secret()
    with db.write() as conn:
        conn.execute(delete(codes).where(codes.c.expires < time.time() - 3600))
        conn.execute(insert(codes).values(
            code_hash=digest(code), client_id=req.client_id, redirect_uri=req.redirect_uri,
            code_challenge=req.code_challenge, grant=orjson.dumps(grant).decode(),
            expires=int(time.time()) + CODE_LIFETIME, used=False,
        ))
        conn.execute(delete(pending).where(pending.c.rid == req.rid))
    return append_query(req.redirect_uri, {"code": code, "state": req.state})
