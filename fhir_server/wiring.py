"""The composition root: builds the services every entry point uses (the web app, the
worker, every command) with the features installed in one visible order.

`build_services(settings)` needs no web framework: the loader, the worker and the commands
call it directly. `init_app(app, services)` adds what only the web app needs (the
authorization server's routes and bearer-token authentication).
"""

from __future__ import annotations

from flask import Flask

from fhir_server.config import Settings
from fhir_server.features import (
    auth,
    coordination,
    directory,
    integrity,
    outcomes,
    profiles,
    reminders,
    screening,
    subscriptions,
    web_apps,
    workflow,
)
from fhir_server.interactions import builtin_operations, operation_definitions, reference_check
from fhir_server.interactions.bundles import process_bundle
from fhir_server.interactions.context import Services
from fhir_server.storage.db import Database

#: Installed in this order; their write hooks run in phase order (`python -m fhir_server hooks`).
FEATURES = (auth, profiles, integrity, workflow, coordination, screening, outcomes, subscriptions,
            directory, reminders)
#: The check-phase hook that refuses references the writer may not read (422).
REFERENCE_CHECK = "access.references-readable"


def build_services(settings: Settings, db: Database | None = None) -> Services:
    """Services with every feature's hooks, operations and definitions installed."""
    services = Services(settings=settings, db=db or Database(settings.database_url),
                        bundles=process_bundle)
    builtin_operations.register(services.operations)
    services.seed_providers.append(operation_definitions.definitions)
    for feature in FEATURES:
        feature.install(services, services.operations)
    # the last check, after every transform: references are capabilities
    services.phases.add("check", REFERENCE_CHECK, reference_check.check_write, order=900)
    return services


def init_app(app: Flask, services: Services) -> None:
    """The web app's part of the features: the authorization server and request
    authentication, then our apps' blueprints."""
    auth.init_app(app, services)
    web_apps.install(app, services)
