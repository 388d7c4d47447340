"""Writing search index rows, inside the caller's write transaction.

A constant number of statements per resource: one DELETE per index table that may hold
rows, one executemany INSERT per table that gets rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table

from fhir_server.search.extract import IndexValues, extract_index
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


def _rows(pid: int, res_type: str, values: list[tuple[Any, ...]],
          cols: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for row in values:
        d = {"pid": pid, "res_type": res_type, "param": row[0], "grp": row[1]}
        d.update(zip(cols, row[2:], strict=True))
        out.append(d)
    return out


def insert_index(conn: Connection, pid: int, res_type: str, values: IndexValues) -> None:
    """Insert the rows of already extracted index values (one executemany per table)."""
    for attr, table, cols in _COLUMNS:
        rows = getattr(values, attr)
        if rows:
            conn.execute(table.insert(), _rows(pid, res_type, rows, cols))
    if values.coords:
        conn.execute(idx_coords.insert(), [
            {"pid": pid, "res_type": res_type, "param": p, "grp": 0, "latitude": lat,
             "longitude": lon} for p, lat, lon in values.coords])


def insert_many(conn: Connection, items: list[tuple[int, str, dict[str, Any]]]) -> None:
    """Index many new resources (pid, type, body) with one executemany per table."""
    batches: dict[str, list[dict[str, Any]]] = {attr: [] for attr, _t, _c in _COLUMNS}
    coords: list[dict[str, Any]] = []
    for pid, res_type, resource in items:
        values = extract_index(resource)
        for attr, _table, cols in _COLUMNS:
            rows = getattr(values, attr)
            if rows:
                batches[attr].extend(_rows(pid, res_type, rows, cols))
        coords.extend({"pid": pid, "res_type": res_type, "param": p, "grp": 0,
                       "latitude": lat, "longitude": lon} for p, lat, lon in values.coords)
    for attr, table, _cols in _COLUMNS:
        if batches[attr]:
            conn.execute(table.insert(), batches[attr])
    if coords:
        conn.execute(idx_coords.insert(), coords)


def delete_index(conn: Connection, pid: int) -> None:
    """Remove every index row of a resource."""
    for table in INDEX_TABLES.values():
        conn.execute(table.delete().where(table.c.pid == pid))


def replace_index(conn: Connection, pid: int, res_type: str, resource: dict[str, Any]) -> None:
    """Replace a resource's index rows with those extracted from its new body."""
    values = extract_index(resource)
    delete_index(conn, pid)
    insert_index(conn, pid, res_type, values)
