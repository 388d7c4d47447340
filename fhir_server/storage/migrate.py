"""Apply the Alembic migrations shipped in fhir_server/migrations."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from fhir_server.storage.db import Database

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(db: Database, revision: str = "head") -> None:
    """Migrate the database to `revision` (default: the latest)."""
    with db.engine.begin() as conn:
        cfg = alembic_config(db.url.render_as_string(hide_password=False))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
