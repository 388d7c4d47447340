"""Our web apps: the landing page and one blueprint per app, each a SMART client of the FHIR
API with the signed-in user's token (see README.md in this folder).

`APPS` lists the app modules; each exposes `SPEC` (an `AppSpec`) and
`blueprint(config, sealer)`. Adding an app is adding its module here.
"""

from __future__ import annotations

from importlib import import_module

from flask import Blueprint

from fhir_server.config import Settings
from fhir_server.web.apps import AppSpec
from fhir_server.web.config import WebConfig
from fhir_server.web.sealing import Sealer

APPS: tuple[str, ...] = (
    "fhir_server.web.clinician",
    "fhir_server.web.dashboard",
    "fhir_server.web.patient",
    "fhir_server.web.workspace",
)


def app_specs() -> list[AppSpec]:
    """Every app's spec, in landing-page order."""
    return [import_module(name).SPEC for name in APPS]


def web_blueprints(settings: Settings) -> list[Blueprint]:
    """The site blueprint (`/`, `/docs`, static files) and one blueprint per app."""
    from fhir_server.web.site import site_blueprint

    config = WebConfig.from_settings(settings)
    sealer = Sealer.from_file(config.secret_file)
    modules = [import_module(name) for name in APPS]
    return [site_blueprint(config, [m.SPEC for m in modules]),
            *[m.blueprint(config, sealer) for m in modules]]
