"""Registered clients and local users: read and write the `auth_clients` / `auth_users` rows."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from fhir_server.auth.auth_schema import clients, sessions, users
from fhir_server.auth.passwords import hash_password
from fhir_server.auth.scopes import ScopeSet, parse_scopes
from fhir_server.auth.tokens import revoke_client_tokens, revoke_user_tokens

CLIENT_KINDS = ("public", "symmetric", "asymmetric")
_REF = {
    "organization": re.compile(r"^Organization/[A-Za-z0-9\-.]{1,64}$"),
    "practitioner": re.compile(r"^Practitioner/[A-Za-z0-9\-.]{1,64}$"),
    "practitioner_role": re.compile(r"^PractitionerRole/[A-Za-z0-9\-.]{1,64}$"),
    "patient": re.compile(r"^Patient/[A-Za-z0-9\-.]{1,64}$"),
}


@dataclass(frozen=True)
class Client:
    """A registered OAuth client."""

    client_id: str
    kind: str
    organization: str
    scope: ScopeSet
    secret_hash: str | None
    jwks: dict[str, Any] | None
    jwks_url: str | None
    redirect_uris: tuple[str, ...]
    launch_uri: str | None
    name: str | None = None
    resource_server: bool = False

    @property
    def confidential(self) -> bool:
        return self.kind != "public"


@dataclass(frozen=True)
class User:
    """A local user account: staff (a Practitioner, optionally their role, and an
    Organization) or a patient (their Patient, no organization)."""

    username: str
    password_hash: str
    fhir_user: str
    practitioner_role: str | None
    organization: str | None
    is_admin: bool
    is_manager: bool = False

    @property
    def roles(self) -> list[str]:
        """What the account may manage, as the id_token's `roles` claim carries it."""
        return [role for role, held in (("administrator", self.is_admin),
                                        ("manager", self.is_manager)) if held]

    @property
    def patient_id(self) -> str | None:
        """The id of the account's own Patient, for a patient account."""
        return self.fhir_user.split("/", 1)[1] if self.fhir_user.startswith("Patient/") \
            else None


def check_reference(kind: str, value: str) -> str:
    """Validate "Type/id" form of an organization/practitioner reference (ValueError)."""
    if not _REF[kind].match(value or ""):
        raise ValueError(f"{kind} must look like {_REF[kind].pattern}, got {value!r}")
    return value


_CLIENT = select(clients).where(
    clients.c.client_id == bindparam("client_id"), clients.c.active.is_(True)
)


def get_client(conn: Connection, client_id: str) -> Client | None:
    """The active client with this id, or None."""
    row = conn.execute(_CLIENT, {"client_id": client_id}).first()
    if row is None:
        return None
    return Client(
        client_id=row.client_id,
        kind=row.kind,
        organization=row.organization,
        scope=parse_scopes(row.scope),
        secret_hash=row.secret_hash,
        jwks=json.loads(row.jwks) if row.jwks else None,
        jwks_url=row.jwks_url,
        redirect_uris=tuple(json.loads(row.redirect_uris or "[]")),
        launch_uri=row.launch_uri,
        name=row.name,
        resource_server=bool(row.resource_server),
    )


def get_user(conn: Connection, username: str) -> User | None:
    """The active user with this username, or None."""
    row = conn.execute(
        select(users).where(users.c.username == username, users.c.active.is_(True))
    ).first()
    if row is None:
        return None
    return User(
        row.username, row.password_hash, row.fhir_user, row.practitioner_role,
        row.organization, bool(row.is_admin), bool(row.is_manager),
    )


def save_client(
    conn: Connection,
    *,
    client_id: str,
    kind: str,
    organization: str,
    scope: str,
    secret: str | None = None,
    jwks: dict[str, Any] | None = None,
    jwks_url: str | None = None,
    redirect_uris: list[str] | tuple[str, ...] = (),
    launch_uri: str | None = None,
    name: str | None = None,
    resource_server: bool = False,
) -> None:
    """Insert or replace a client registration (validated; ValueError on bad input).
    Replacing a registration revokes the client's tokens: they carried the old one."""
    if kind not in CLIENT_KINDS:
        raise ValueError(f"client kind must be one of {CLIENT_KINDS}")
    check_reference("organization", organization)
    parsed = parse_scopes(scope)
    if parsed.unknown:
        raise ValueError(f"unknown scopes: {' '.join(parsed.unknown)}")
    if kind == "symmetric" and not secret:
        raise ValueError("a confidential symmetric client needs a secret")
    if kind == "asymmetric" and not (jwks or jwks_url):
        raise ValueError("a confidential asymmetric client needs --jwks or --jwks-url")
    if jwks is not None and not isinstance(jwks.get("keys"), list):
        raise ValueError("the JWKS must be an object with a 'keys' array")
    for uri in list(redirect_uris) + ([launch_uri] if launch_uri else []) + (
        [jwks_url] if jwks_url else []
    ):
        if not re.match(r"^https?://", uri):
            raise ValueError(f"not an absolute http(s) URI: {uri}")
    revoke_client_tokens(conn, client_id)  # a re-registration starts with no live token
    conn.execute(delete(clients).where(clients.c.client_id == client_id))
    conn.execute(
        insert(clients).values(
            client_id=client_id,
            name=name,
            kind=kind,
            organization=organization,
            scope=parsed.render(),
            secret_hash=hash_password(secret) if secret else None,
            jwks=json.dumps(jwks) if jwks else None,
            jwks_url=jwks_url,
            redirect_uris=json.dumps(list(redirect_uris)),
            launch_uri=launch_uri,
            active=True,
            created=int(time.time()),
            resource_server=resource_server,
        )
    )


USERNAME = re.compile(r"^[A-Za-z0-9_.@\-]{1,200}$")
MIN_PASSWORD = 8


def check_new_credentials(username: str, password: str) -> None:
    """The rules for a new account's username and password (ValueError)."""
    if not USERNAME.match(username or ""):
        raise ValueError("username may contain letters, digits and _ . @ - only")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"password must have at least {MIN_PASSWORD} characters")


def save_user(
    conn: Connection,
    *,
    username: str,
    password: str,
    practitioner: str | None = None,
    organization: str | None = None,
    practitioner_role: str | None = None,
    is_admin: bool = False,
    is_manager: bool = False,
    patient: str | None = None,
) -> None:
    """Insert or replace a user account (password hashed with scrypt): staff with
    `practitioner` and `organization`, or a patient with `patient` alone (a patient account
    has no organization, no role and is never an administrator)."""
    check_new_credentials(username, password)
    if patient is not None:
        if practitioner or organization or practitioner_role or is_admin or is_manager:
            raise ValueError("a patient account has no practitioner, organization, role, "
                             "administrator or manager right")
        check_reference("patient", patient)
        practitioner = patient
    else:
        check_reference("practitioner", practitioner or "")
        check_reference("organization", organization or "")
    if practitioner_role:
        check_reference("practitioner_role", practitioner_role)
    end_user_access(conn, username)  # tokens and sessions carried the old registration
    conn.execute(delete(users).where(users.c.username == username))
    conn.execute(
        insert(users).values(
            username=username,
            password_hash=hash_password(password),
            fhir_user=practitioner,
            practitioner_role=practitioner_role,
            organization=organization,
            is_admin=is_admin,
            is_manager=is_manager,
            active=True,
            created=int(time.time()),
        )
    )


def end_user_access(conn: Connection, username: str) -> None:
    """Revoke a user's tokens and end their sign-in sessions."""
    revoke_user_tokens(conn, username)
    conn.execute(delete(sessions).where(sessions.c.username == username))


def deactivate_client(conn: Connection, client_id: str) -> bool:
    """Deactivate a client and revoke its tokens at once; False if unknown."""
    found = conn.execute(update(clients).where(clients.c.client_id == client_id)
                         .values(active=False)).rowcount
    revoke_client_tokens(conn, client_id)
    return bool(found)


def deactivate_user(conn: Connection, username: str) -> bool:
    """Deactivate a user, revoke their tokens and end their sessions; False if unknown."""
    found = conn.execute(update(users).where(users.c.username == username)
                         .values(active=False)).rowcount
    end_user_access(conn, username)
    return bool(found)
