"""Shared fixtures: every database test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fhir_server.storage.db import Database
from fhir_server.storage.migrate import upgrade
from tests.dbs import backends, fresh_database_url

REPO_ROOT = Path(__file__).resolve().parents[1]
# A developer's settings file (.env) must not change what the tests see; subprocesses
# inherit this too. Tests of the settings file name their own.
os.environ["FHIR_SERVER_ENV_FILE"] = os.devnull


@pytest.fixture(scope="module", params=backends())
def database(request, tmp_path_factory) -> Database:
    """A fresh Database with the full schema, shared by one test module, per backend."""
    url = fresh_database_url(request.param, tmp_path_factory.mktemp("db"))
    db = Database(url)
    upgrade(db)  # the Alembic migrations production runs (test_migrations: == metadata)
    yield db
    db.dispose()


@pytest.fixture(scope="module")
def server(database):
    """A real FHIR server on a loopback port over the module's database; yields a client."""
    from fhir_server.app import create_app
    from fhir_server.config import Settings
    from fhir_server.seed import seed_definitions
    from tests.live import FhirHttp, LiveServer

    settings = Settings.from_env(database_url=database.url.render_as_string(hide_password=False),
                                 base_url="", auth_mode="off")
    app = create_app(settings, db=database)
    seed_definitions(app.extensions["fhir_services"])
    live = LiveServer(app)
    client = FhirHttp(live.base)
    client.database = database
    client.app = app
    yield client
    live.stop()


@pytest.fixture(scope="module")
def sample_world(server):
    """Load the resources the samples reference (tests.samples.sample_world) into the
    module's server, once."""
    from tests.samples import sample_world as world

    for resource in world():
        response = server.put(f"{resource['resourceType']}/{resource['id']}", resource)
        assert response.status_code in (200, 201), response.text
    return server
