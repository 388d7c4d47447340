"""Command-line registration of users and clients (`python -m fhir_server users|clients add`).

`register_cli(subparsers)` adds the commands; each leaf sets `auth_handler(args, db)`, run
by `run_command` on the configured database (`db` is None when `auth_needs_db` is False:
`clients keygen` and `clients token`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fhir_server.auth import login_store
from fhir_server.auth.demo_tokens import fetch_token, generate_key_pair
from fhir_server.auth.registry import (
    check_reference,
    deactivate_client,
    deactivate_user,
    save_client,
    save_user,
)
from fhir_server.config import Settings, public_root
from fhir_server.storage.db import Database
from fhir_server.storage.repository import Repository
from subscriptions.channels import SmtpSettings


def add_user(
    db: Database,
    username: str,
    password: str,
    practitioner: str,
    organization: str,
    practitioner_role: str | None = None,
    admin: bool = False,
    manager: bool = False,
) -> None:
    """Create or replace a local user linked to Practitioner/ID and Organization/ID
    (`manager`: manager of that organization, for the outcomes dashboard)."""
    with db.write() as conn:
        save_user(conn, username=username, password=password, practitioner=practitioner,
                  organization=organization, practitioner_role=practitioner_role,
                  is_admin=admin, is_manager=manager)


def add_client(
    db: Database,
    client_id: str,
    organization: str,
    scope: str,
    *,
    jwks: dict[str, Any] | None = None,
    jwks_url: str | None = None,
    secret: str | None = None,
    public: bool = False,
    redirect_uris: list[str] | tuple[str, ...] = (),
    launch_uri: str | None = None,
    name: str | None = None,
    resource_server: bool = False,
) -> str:
    """Register (or replace) a client; exactly one credential kind. Returns the client kind.
    Replacing a registration revokes the client's tokens."""
    given = [x is not None for x in (jwks, jwks_url, secret)] + [public]
    if sum(given) != 1:
        raise ValueError("give exactly one of --jwks, --jwks-url, --secret-file, --public")
    kind = "public" if public else "symmetric" if secret is not None else "asymmetric"
    if kind != "asymmetric" and not redirect_uris:
        raise ValueError("an app (public or symmetric client) needs at least one --redirect-uri")
    with db.write() as conn:
        save_client(conn, client_id=client_id, kind=kind, organization=organization, scope=scope,
                    secret=secret, jwks=jwks, jwks_url=jwks_url, redirect_uris=redirect_uris,
                    launch_uri=launch_uri, name=name, resource_server=resource_server)
    return kind


def load_clients_file(db: Database, path: Path) -> list[str]:
    """Register every client of a JSON config file; returns their ids.

    Format: ``{"clients": [{"client_id", "organization", "scope", one of "jwks" (object),
    "jwks_url", "secret" or "secret_file", "public": true, "redirect_uris": [...],
    "launch_uri", "name"}]}``. Relative `secret_file` paths are relative to the file.
    """
    data = json.loads(path.read_text())
    ids = []
    for item in data.get("clients", []):
        secret = item.get("secret")
        if item.get("secret_file"):
            secret = _read_secret(path.parent / item["secret_file"])
        add_client(
            db, item["client_id"], item["organization"], item["scope"],
            jwks=item.get("jwks"), jwks_url=item.get("jwks_url"), secret=secret,
            public=bool(item.get("public")), redirect_uris=item.get("redirect_uris", []),
            launch_uri=item.get("launch_uri"), name=item.get("name"),
        )
        ids.append(item["client_id"])
    return ids


def _read_secret(path: Path) -> str:
    value = path.read_text().strip()
    if not value:
        raise ValueError(f"{path} is empty")
    return value


def add_patient_user(db: Database, username: str, password: str, patient: str) -> None:
    """Create or replace a patient's account, bound to their Patient/ID on this server
    (ValueError when no such Patient is stored)."""
    check_reference("patient", patient)
    res_id = patient.split("/", 1)[1]
    with db.write() as conn:
        stored = Repository(conn).read("Patient", res_id)
        if stored is None or stored.deleted:
            raise ValueError(f"{patient} is not stored on this server")
        save_user(conn, username=username, password=password, patient=patient)


def _users_add(args: argparse.Namespace, db: Database) -> int:
    password = _read_secret(Path(args.password_file))
    if args.patient:
        if (args.practitioner or args.organization or args.practitioner_role or args.admin
                or args.manager):
            raise ValueError("--patient cannot be combined with --practitioner, "
                             "--organization, --practitioner-role, --admin or --manager")
        add_patient_user(db, args.username, password, args.patient)
        print(f"patient account {args.username} saved ({args.patient})")
        return 0
    if not (args.practitioner and args.organization):
        raise ValueError("give --practitioner and --organization (staff) or --patient")
    add_user(db, args.username, password, args.practitioner, args.organization,
             args.practitioner_role, args.admin, args.manager)
    print(f"user {args.username} saved ({args.practitioner}, {args.organization})")
    return 0


def _users_invite(args: argparse.Namespace, db: Database) -> int:
    from fhir_server.auth.invitations import create_invitation, join_link, send_invitation

    check_reference("patient", args.patient)
    settings = Settings.from_env()
    root = (args.link_base or public_root(settings.base_url) or "").rstrip("/")
    if not root:
        raise ValueError("give --link-base https://your-server (or set FHIR_SERVER_BASE_URL): "
                         "the link must work from the patient's phone")
    invitation = create_invitation(db, args.patient, args.days)
    link = join_link(root, invitation.code)
    if args.print_link:
        print(f"invitation for {args.patient} (valid {args.days} days; give it only to the "
              f"patient):\n{link}")
        return 0
    smtp = SmtpSettings(settings.smtp_host, settings.smtp_port, settings.smtp_from)
    send_invitation(smtp, invitation, link, args.days)
    print(f"invitation for {args.patient} e-mailed to the address on file, valid "
          f"{args.days} days")
    return 0


def _clients_add(args: argparse.Namespace, db: Database) -> int:
    jwks = json.loads(Path(args.jwks).read_text()) if args.jwks else None
    secret = _read_secret(Path(args.secret_file)) if args.secret_file else None
    kind = add_client(db, args.client_id, args.organization, args.scope, jwks=jwks,
                      jwks_url=args.jwks_url, secret=secret, public=args.public,
                      redirect_uris=args.redirect_uri or [], launch_uri=args.launch_uri,
                      name=args.name, resource_server=args.resource_server)
    print(f"client {args.client_id} saved ({kind}, {args.organization})")
    return 0


def _users_deactivate(args: argparse.Namespace, db: Database) -> int:
    with db.write() as conn:
        found = deactivate_user(conn, args.username)
    print(f"user {args.username} deactivated; tokens revoked, sessions ended" if found
          else f"no user {args.username}")
    return 0 if found else 1


def _users_unlock(args: argparse.Namespace, db: Database) -> int:
    if not (args.username or args.address):
        raise ValueError("give --username and/or --address")
    keys = ([login_store.account_key(args.username)] if args.username else []) + (
        [login_store.address_key(args.address)] if args.address else [])
    with db.write() as conn:
        cleared = [key for key in keys if login_store.clear(conn, key)]
    print(f"unlocked: {', '.join(cleared)}" if cleared else "nothing was locked")
    return 0


def _clients_deactivate(args: argparse.Namespace, db: Database) -> int:
    with db.write() as conn:
        found = deactivate_client(conn, args.client_id)
    print(f"client {args.client_id} deactivated; its tokens are revoked" if found
          else f"no client {args.client_id}")
    return 0 if found else 1


def _clients_load(args: argparse.Namespace, db: Database) -> int:
    ids = load_clients_file(db, Path(args.file))
    print(f"{len(ids)} client(s) loaded: {', '.join(ids)}")
    return 0


def _clients_keygen(args: argparse.Namespace, _db: Database | None) -> int:
    kid = generate_key_pair(Path(args.private), Path(args.public), args.alg)
    print(f"key {kid} ({args.alg}): private JWK in {args.private} (keep it secret), "
          f"public JWKS in {args.public} (register it with clients add --jwks)")
    return 0


def _clients_token(args: argparse.Namespace, _db: Database | None) -> int:
    body = fetch_token(Path(args.key_file), args.client_id, args.token_url, args.scope)
    print(json.dumps(body, indent=2))
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add `users add`, `clients add` and `clients load` to a top-level argparse parser.

    Each leaf sets `auth_handler(args, db) -> int` as a default.
    """
    users = subparsers.add_parser("users", help="manage local user accounts")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    ua = users_sub.add_parser("add", help="create or replace a user")
    ua.add_argument("--username", required=True)
    ua.add_argument("--password-file", required=True, help="file holding the password")
    ua.add_argument("--practitioner", help="Practitioner/ID (staff)")
    ua.add_argument("--organization", help="Organization/ID (staff)")
    ua.add_argument("--patient", help="Patient/ID: a patient's own account (no organization)")
    ua.add_argument("--practitioner-role", help="PractitionerRole/ID")
    ua.add_argument("--admin", action="store_true", help="may read the audit log")
    ua.add_argument("--manager", action="store_true",
                    help="manager of the organization: may use the outcomes dashboard")
    ua.set_defaults(auth_handler=_users_add)
    ud = users_sub.add_parser("deactivate", help="deactivate a user: tokens revoked at once")
    ud.add_argument("--username", required=True)
    ud.set_defaults(auth_handler=_users_deactivate)
    uu = users_sub.add_parser("unlock", help="lift a sign-in lockout")
    uu.add_argument("--username", help="the locked account")
    uu.add_argument("--address", help="the locked network address")
    uu.set_defaults(auth_handler=_users_unlock)
    ui = users_sub.add_parser("invite", help="e-mail a patient a one-time link to make "
                                             "their account")
    ui.add_argument("--patient", required=True, help="Patient/ID (its e-mail on file)")
    ui.add_argument("--days", type=int, default=7, help="how long the link works (1-30)")
    ui.add_argument("--link-base", help="public root of this server (default: from "
                                        "FHIR_SERVER_BASE_URL)")
    ui.add_argument("--print-link", action="store_true",
                    help="print the link (to hand over in person) instead of e-mailing it")
    ui.set_defaults(auth_handler=_users_invite)

    clients = subparsers.add_parser("clients", help="manage OAuth clients")
    clients_sub = clients.add_subparsers(dest="clients_command", required=True)
    ca = clients_sub.add_parser("add", help="register or replace a client")
    ca.add_argument("--client-id", required=True)
    ca.add_argument("--organization", required=True, help="Organization/ID")
    ca.add_argument("--scope", required=True, help='maximum scope, e.g. "system/Task.rsu"')
    cred = ca.add_mutually_exclusive_group(required=True)
    cred.add_argument("--jwks", help="file with the client's public JWKS")
    cred.add_argument("--jwks-url", help="URL of the client's public JWKS")
    cred.add_argument("--secret-file", help="file holding the client secret")
    cred.add_argument("--public", action="store_true", help="public client (PKCE only)")
    ca.add_argument("--redirect-uri", action="append", help="repeatable")
    ca.add_argument("--launch-uri", help="the app's EHR-launch URL")
    ca.add_argument("--name", help="display name on the approval page")
    ca.add_argument("--resource-server", action="store_true",
                    help="may introspect other clients' tokens")
    ca.set_defaults(auth_handler=_clients_add)
    cd = clients_sub.add_parser("deactivate", help="deactivate a client: tokens revoked at once")
    cd.add_argument("--client-id", required=True)
    cd.set_defaults(auth_handler=_clients_deactivate)
    cl = clients_sub.add_parser("load", help="register clients from a JSON config file")
    cl.add_argument("file")
    cl.set_defaults(auth_handler=_clients_load)
    kg = clients_sub.add_parser("keygen", help="generate a Backend Services key pair")
    kg.add_argument("--private", required=True, help="output: private JWK file")
    kg.add_argument("--public", required=True, help="output: public JWKS file")
    kg.add_argument("--alg", choices=["RS384", "ES384"], default="RS384")
    kg.set_defaults(auth_handler=_clients_keygen, auth_needs_db=False)
    tk = clients_sub.add_parser("token", help="fetch a Backend Services access token")
    tk.add_argument("--client-id", required=True)
    tk.add_argument("--key-file", required=True, help="private JWK file (from keygen)")
    tk.add_argument("--token-url", required=True)
    tk.add_argument("--scope", required=True)
    tk.set_defaults(auth_handler=_clients_token, auth_needs_db=False)
    for parser in (users, clients):
        parser.set_defaults(handler=run_command)


def run_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run a `users ...` / `clients ...` leaf on the configured database."""
    db = Database(settings.database_url) if getattr(args, "auth_needs_db", True) else None
    try:
        return int(args.auth_handler(args, db) or 0)
    finally:
        if db is not None:
            db.dispose()
