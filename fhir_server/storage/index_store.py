"""Writing search index rows, inside the caller's write transaction.

Rows are queued in `write_buffer` and sent as one executemany per table before anything
reads the index tables, and before the transaction commits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table

from fhir_server.search.extract import IndexValues, extract_index
from fhir_server.storage import write_buffer
from fhir_server.storage.index_schema import (
    INDEX_TABLES,
    idx_coords,
    idx_date,
    idx_number,
    idx_quantity,
    idx_reference,
    idx_string,
    idx_token,
    idx_uri,
)

_COLUMNS: list[tuple[str, Table, tuple[str, ...]]] = [
    ("strings", idx_string, ("value_norm", "value_exact")),
    ("tokens", idx_token, ("system", "code", "text")),
    ("references", idx_reference,
     ("target_type", "target_id", "url", "ident_system", "ident_value")),
    ("dates", idx_date, ("low", "high")),
    ("numbers", idx_number, ("value",)),
    ("quantities", idx_quantity, ("value", "system", "code", "unit")),
    ("uris", idx_uri, ("uri",)),
]
_COORD_COLS = ("latitude", "longitude")
# The index values of the versions this connection wrote last, by (pid, version), for the
# write phases that match a new version against search criteria (Subscriptions): they need
# not extract them again.
_RECENT_KEY = "fhir_recent_index"
_RECENT_MAX = 64


def _queue(conn: Connection, table: Table, cols: tuple[str, ...],
           rows: list[tuple[Any, ...]]) -> None:
    write_buffer.add_rows(conn, table.name, ("pid", "res_type", "param", "grp", *cols), rows)


def recent_values(conn: Connection, pid: int, version: int) -> IndexValues | None:
    """The index values this connection wrote for version `version` of `pid`, if that was
    among its last few writes (None otherwise: extract them)."""
    return conn.info.get(_RECENT_KEY, {}).get((pid, str(version)))


def _remember(conn: Connection, pid: int, resource: dict[str, Any],
              values: IndexValues) -> IndexValues:
    version = (resource.get("meta") or {}).get("versionId")
    if version is not None:
        recent = conn.info.setdefault(_RECENT_KEY, {})
        if len(recent) >= _RECENT_MAX:
            recent.clear()
        recent[(pid, str(version))] = values
    return values


def insert_index(conn: Connection, pid: int, res_type: str, values: IndexValues) -> None:
    """Queue the index rows of already extracted values."""
    for attr, table, cols in _COLUMNS:
        _queue(conn, table, cols, [(pid, res_type, *row) for row in getattr(values, attr)])
    _queue(conn, idx_coords, _COORD_COLS,
           [(pid, res_type, p, 0, lat, lon) for p, lat, lon in values.coords])


def insert_many(conn: Connection, items: list[tuple[int, str, dict[str, Any]]]) -> None:
    """Queue the index rows of many new resources (pid, type, body)."""
    for pid, res_type, resource in items:
        insert_index(conn, pid, res_type, extract_index(resource))


# IndexValues attribute -> INDEX_TABLES key of the table holding those rows.
_TABLE_OF = {"strings": "string", "tokens": "token", "references": "reference",
             "dates": "date", "numbers": "number", "quantities": "quantity", "uris": "uri",
             "coords": "special"}


def _tables_with_rows(values: IndexValues) -> list[str]:
    return [table for attr, table in _TABLE_OF.items() if getattr(values, attr)]


def delete_index(conn: Connection, pid: int, previous: dict[str, Any] | None = None) -> None:
    """Remove every index row of a resource. With the `previous` body, only the tables it
    has rows in (fewer statements when the transaction's queue is flushed)."""
    names = (_tables_with_rows(extract_index(previous)) if previous is not None
             else list(INDEX_TABLES))
    write_buffer.delete_rows(conn, [INDEX_TABLES[name].name for name in names], pid)


def index_new(conn: Connection, pid: int, res_type: str, resource: dict[str, Any]) -> None:
    """Index a resource that has no index rows yet (a create: nothing to delete)."""
    insert_index(conn, pid, res_type, _remember(conn, pid, resource, extract_index(resource)))


def replace_index(conn: Connection, pid: int, res_type: str, resource: dict[str, Any],
                  previous: dict[str, Any] | None = None) -> None:
    """Replace a resource's index rows with those extracted from its new body; `previous`
    (the body being replaced) limits the deletes to the tables that hold its rows."""
    values = _remember(conn, pid, resource, extract_index(resource))
    delete_index(conn, pid, previous)
    insert_index(conn, pid, res_type, values)
