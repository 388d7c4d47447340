"""Our web apps wired into the server: their blueprints, and their registration as public
SMART clients (PKCE, no secret) of this server's authorization server.

A client's redirect and launch URIs must be absolute, so they are registered for known roots
only, never for a Host header a request sends: the root of `FHIR_SERVER_BASE_URL` at start-up,
and the address `python -m fhir_server serve` binds when that is empty
(`register_app_clients`). Registration is idempotent.
"""

from __future__ import annotations

import logging

from flask import Flask

from fhir_server.auth.cli import add_client
from fhir_server.config import Settings, public_root
from fhir_server.interactions.context import Services
from fhir_server.storage.db import Database
from fhir_server.web import app_specs, web_blueprints

log = logging.getLogger("fhir_server.web")
# Public clients only act for their signed-in users; this binding is never used for data.
CLIENT_ORGANIZATION = "Organization/mh-referral-apps"


def install(app: Flask, services: Services) -> None:
    """Mount the apps; register their clients for the configured public base URL."""
    for blueprint in web_blueprints(services.settings):
        app.register_blueprint(blueprint)
    root = public_root(services.settings.base_url)
    if root:
        register_app_clients(services.db, services.settings, [root])


def serve_roots(host: str, port: int) -> list[str]:
    """The roots a browser may use for `serve --host H --port P` (loopback: both names)."""
    if host in ("127.0.0.1", "localhost", "0.0.0.0", "::", "::1"):
        return [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    return [f"http://{host}:{port}"]


def register_app_clients(db: Database, settings: Settings, roots: list[str]) -> list[str]:
    """Register (or update) every app as a public client with redirect (and launch) URIs
    under each root; returns the client ids."""
    ids = []
    for spec in app_specs():
        redirects = [f"{r.rstrip('/')}{spec.path}/callback" for r in roots]
        launch = f"{roots[0].rstrip('/')}{spec.path}/launch" if spec.name == "clinician" \
            else None
        add_client(db, spec.client_id, settings.platform_organization or CLIENT_ORGANIZATION,
                   f"launch launch/patient {spec.scope}", public=True,
                   redirect_uris=redirects, launch_uri=launch, name=spec.title)
        ids.append(spec.client_id)
    log.info("web app clients registered for %s: %s", ", ".join(roots), ", ".join(ids))
    return ids
