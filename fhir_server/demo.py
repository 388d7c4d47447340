"""`python -m fhir_server demo-clients`: Backend Services clients for the organizations of
the loaded examples, with key pairs generated locally under var/demo/ (never committed),
and the commands that get a token for each."""

from __future__ import annotations

import json
from pathlib import Path

from fhir_server.auth.cli import add_client
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
