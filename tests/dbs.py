"""Fresh test databases on SQLite and (when FHIR_TEST_PG_URL is set) PostgreSQL."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_URL_ENV = "FHIR_TEST_PG_URL"


def backends() -> list[str]:
    """The database backends tests run against."""
    return ["sqlite", "postgresql"] if os.environ.get(PG_URL_ENV) else ["sqlite"]


def fresh_database_url(backend: str, tmp_dir: Path) -> str:
    """Create an empty database and return its SQLAlchemy URL."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_dir / ('t' + uuid.uuid4().hex[:8] + '.sqlite3')}"
    admin_url = make_url(os.environ[PG_URL_ENV])
    name = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin_url.set(database=name).render_as_string(hide_password=False)
