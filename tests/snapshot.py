"""Full database contents, to prove that a failed request changed nothing."""

from __future__ import annotations

from sqlalchemy import select

from fhir_server.tables import metadata

# The audit log records refused requests by design: it is the one table a refusal changes.
AUDIT_TABLES = frozenset({"auth_audit_events", "auth_audit_links"})


def db_snapshot(database) -> dict[str, list[tuple]]:
    """Every row of every table (but the audit log), sorted, keyed by table name."""
    out: dict[str, list[tuple]] = {}
    with database.read() as conn:
        for table in metadata.sorted_tables:
            if table.name in AUDIT_TABLES:
                continue
            rows = conn.execute(select(table)).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out
