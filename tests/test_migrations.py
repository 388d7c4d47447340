"""Alembic migrations build exactly the schema the code defines, on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from fhir_server.storage.db import Database
from fhir_server.storage.migrate import upgrade
from fhir_server.tables import metadata
from tests.dbs import backends, fresh_database_url


@pytest.mark.parametrize("backend", backends())
def test_upgrade_head_matches_metadata(backend, tmp_path):
    db = Database(fresh_database_url(backend, tmp_path))
    try:
        upgrade(db)
        upgrade(db)  # idempotent: already at head
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == [], diff
    finally:
        db.dispose()
