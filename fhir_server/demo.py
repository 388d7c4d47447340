"""`python -m fhir_server demo-clients`: Backend Services clients for the organizations of
the loaded examples, with key pairs generated locally under var/demo/ (never committed),
and the commands that get a token for each; one staff account per organization for the
apps (a Practitioner with a PractitionerRole, password generated into var/demo/); and the
example patient's own account for the patient's pages (`demo-patient`)."""

from __future__ import annotations

import argparse
import json
import secrets
from pathlib import Path

from fhir_server.auth.cli import add_client, add_patient_user, add_user
from fhir_server.auth.demo_tokens import generate_key_pair, token_help
from fhir_server.config import Settings
from fhir_server.storage.db import Database
from fhir_server.storage.search_sql import find_ids

NPI = "http://hl7.org/fhir/sid/us-npi"
#: client id -> (NPI of its organization in examples/, maximum scope)
DEMO_CLIENTS = {
    "demo-ehr": ("1457398021", "system/*.cruds"),  # Riverside Family Health Center (referrer)
    "demo-cbo": ("1902886548", "system/*.cruds"),  # Lakeside Behavioral Health (recipient)
}
#: username -> (NPI of the user's organization, given name, family name)
DEMO_USERS = {
    "demo-clinician": ("1457398021", "Amara", "Okafor"),
    "demo-provider": ("1902886548", "Jordan", "Reyes"),
    "demo-manager": ("1457398021", "Morgan", "Lee"),  # the clinic's manager: /dashboard
}
DEMO_MANAGERS = frozenset({"demo-manager"})
#: the example patient (examples/referral-bundle-1.json) and her account
DEMO_PATIENT = ("demo-patient", "http://hospital.example.org/mrn|MRN-204-7731")


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add `demo-clients [--key-dir DIR] [--base-url URL]`."""
    demo = sub.add_parser("demo-clients", help="register Backend Services clients for the "
                                               "example organizations and print token help")
    demo.add_argument("--key-dir", default="var/demo")
    demo.add_argument("--base-url", default="http://127.0.0.1:8080/fhir")
    demo.set_defaults(handler=_handler)


def _handler(settings: Settings, args: argparse.Namespace) -> int:
    for text in setup_demo_clients(settings, Path(args.key_dir), args.base_url):
        print(text)
    for text in setup_demo_users(settings, Path(args.key_dir)):
        print(text)
    return 0


def setup_demo_clients(settings: Settings, key_dir: Path, base_url: str) -> list[str]:
    """Register the demo clients (idempotent) and return the help text for each."""
    db = Database(settings.database_url)
    key_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    try:
        for client_id, (npi, scope) in DEMO_CLIENTS.items():
            with db.read() as conn:
                ids = find_ids(conn, "Organization", [("identifier", f"{NPI}|{npi}")])
            if not ids:
                lines.append(f"(no Organization with NPI {npi}: load examples/ first)")
                continue
            private, public = key_dir / f"{client_id}.jwk.json", key_dir / f"{client_id}.jwks.json"
            if not private.exists():
                generate_key_pair(private, public)
            add_client(db, client_id, f"Organization/{ids[0]}", scope,
                       jwks=json.loads(public.read_text()), name=client_id)
            lines.append(token_help(base_url, client_id, str(private), scope))
    finally:
        db.dispose()
    return lines


def setup_demo_users(settings: Settings, key_dir: Path) -> list[str]:
    """Staff accounts for the example organizations (idempotent); returns how to sign in."""
    from fhir_server.auth.context import SYSTEM
    from fhir_server.interactions.context import Call
    from fhir_server.wiring import build_services

    services = build_services(settings)
    call = Call(services=services, base_url=settings.base_url or "", access=SYSTEM)
    key_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    try:
        for username, (npi, given, family) in DEMO_USERS.items():
            with services.db.read() as conn:
                ids = find_ids(conn, "Organization", [("identifier", f"{NPI}|{npi}")])
            if not ids:
                lines.append(f"(no Organization with NPI {npi}: load examples/ first)")
                continue
            practitioner, role = f"demo-{username}", f"demo-{username}-role"
            _put(call, {
                "resourceType": "Practitioner", "id": practitioner, "active": True,
                "name": [{"prefix": ["Dr"], "given": [given], "family": family}]})
            _put(call, {
                "resourceType": "PractitionerRole", "id": role, "active": True,
                "practitioner": {"reference": f"Practitioner/{practitioner}"},
                "organization": {"reference": f"Organization/{ids[0]}"}})
            secret_file = _password_file(key_dir, username)
            add_user(services.db, username, secret_file.read_text().strip(),
                     f"Practitioner/{practitioner}", f"Organization/{ids[0]}",
                     practitioner_role=f"PractitionerRole/{role}",
                     manager=username in DEMO_MANAGERS)
            lines.append(f"user {username}: password in {secret_file}")
        lines.append(_demo_patient(services.db, key_dir))
    finally:
        services.db.dispose()
    return lines


def _put(call, resource: dict) -> None:  # type: ignore[no-untyped-def]
    """PUT the resource unless it is stored with the same content (`make run` twice writes
    no new versions)."""
    from fhir_server.interactions import crud
    from fhir_server.json_tree import same_content
    from fhir_server.storage.repository import Repository

    res_type, res_id = resource["resourceType"], resource["id"]
    with call.db.read() as conn:
        current = Repository(conn).read(res_type, res_id)
    if current is not None and not current.deleted and same_content(current.resource(),
                                                                    resource):
        return
    crud.update(call, res_type, res_id, resource)


def _demo_patient(db: Database, key_dir: Path) -> str:
    """The example patient's own account (for `/me`)."""
    username, identifier = DEMO_PATIENT
    with db.read() as conn:
        ids = find_ids(conn, "Patient", [("identifier", identifier)])
    if not ids:
        return f"(no Patient {identifier}: load examples/ first)"
    secret_file = _password_file(key_dir, username)
    add_patient_user(db, username, secret_file.read_text().strip(), f"Patient/{ids[0]}")
    return f"patient {username}: password in {secret_file} (sign in at /me/)"


def _password_file(key_dir: Path, username: str) -> Path:
    """var/demo/<username>.password, made once with a random password."""
    secret_file = key_dir / f"{username}.password"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(12))
        secret_file.chmod(0o600)
    return secret_file
