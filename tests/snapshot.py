"""Full database contents, to prove that a failed request changed nothing."""

from __future__ import annotations

from sqlalchemy import select

from fhir_server.storage.schema import metadata


def db_snapshot(database) -> dict[str, list[tuple]]:
    """Every row of every table, sorted, keyed by table name."""
    out: dict[str, list[tuple]] = {}
    with database.read() as conn:
        for table in metadata.sorted_tables:
            rows = conn.execute(select(table)).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out
