"""A row lock per (resource type, conditional-create criteria).

PostgreSQL: the upsert takes a row lock held until commit, so a concurrent conditional create
with the same criteria waits, then (READ COMMITTED) sees the first one's resource when it
searches. SQLite: write transactions are already serialised by BEGIN IMMEDIATE; the upsert is
harmless there and keeps the code identical.
"""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from fhir_server.storage.schema import conditional_keys


def lock_criteria(conn: Connection, res_type: str, criteria_hash: str) -> None:
    """Upsert the lock row for these criteria (blocks while another transaction holds it)."""
    dialect = conn.dialect.name
    make = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = make(conditional_keys).values(res_type=res_type, criteria_hash=criteria_hash, pid=0)
    stmt = stmt.on_conflict_do_update(
        index_elements=[conditional_keys.c.res_type, conditional_keys.c.criteria_hash],
        set_={"pid": conditional_keys.c.pid + 1},
    )
    conn.execute(stmt)
