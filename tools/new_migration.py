"""Developer tool: write the next Alembic migration from the difference between the
migrated schema and the tables the code defines (fhir_server/tables.py).

    python tools/new_migration.py "message" REVISION_ID
Review the generated file before committing it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

import fhir_server.tables
from fhir_server.storage.db import Database
from fhir_server.storage.migrate import alembic_config, upgrade


def main() -> None:
    message, rev_id = sys.argv[1], sys.argv[2]
    url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'head.sqlite3'}"
    db = Database(url)
    upgrade(db)
    cfg = alembic_config(url)
    cfg.attributes["target_metadata"] = fhir_server.tables.metadata
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message=message, autogenerate=True, rev_id=rev_id)
    db.dispose()


if __name__ == "__main__":
    main()
