"""Writing search index rows, inside the caller's write transaction.

A constant number of statements per resource: one DELETE per index table that may hold
rows, one executemany INSERT per table that gets rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table, bindparam

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


def _rows(pid: int, res_type: str, values: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [(pid, res_type, *row) for row in values]


def _insert_sql(conn: Connection, table: Table, cols: tuple[str, ...]) -> str | None:
    """A plain INSERT for DBAPI executemany (skips SQLAlchemy's per-row parameter work)."""
    style = conn.dialect.paramstyle
    mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(style)
    if mark is None:
        return None
    names = ("pid", "res_type", "param", "grp", *cols)
    return (f"INSERT INTO {table.name} ({', '.join(names)}) "
            f"VALUES ({', '.join([mark] * len(names))})")


def _execute_rows(conn: Connection, table: Table, cols: tuple[str, ...],
                  rows: list[tuple[Any, ...]]) -> None:
    sql = _insert_sql(conn, table, cols)
    if sql is not None:
        conn.exec_driver_sql(sql, rows)
    else:
        names = ("pid", "res_type", "param", "grp", *cols)
        conn.execute(table.insert(), [dict(zip(names, r, strict=True)) for r in rows])


_COORD_COLS = ("latitude", "longitude")


def insert_index(conn: Connection, pid: int, res_type: str, values: IndexValues) -> None:
    """Insert the rows of already extracted index values (one executemany per table)."""
    for attr, table, cols in _COLUMNS:
        rows = getattr(values, attr)
        if rows:
            _execute_rows(conn, table, cols, _rows(pid, res_type, rows))
    if values.coords:
        _execute_rows(conn, idx_coords, _COORD_COLS,
                      [(pid, res_type, p, 0, lat, lon) for p, lat, lon in values.coords])


def insert_many(conn: Connection, items: list[tuple[int, str, dict[str, Any]]]) -> None:
    """Index many new resources (pid, type, body) with one executemany per table."""
    batches: dict[str, list[tuple[Any, ...]]] = {attr: [] for attr, _t, _c in _COLUMNS}
    coords: list[tuple[Any, ...]] = []
    for pid, res_type, resource in items:
        values = extract_index(resource)
        for attr, _table, _cols in _COLUMNS:
            rows = getattr(values, attr)
            if rows:
                batches[attr].extend(_rows(pid, res_type, rows))
        coords.extend((pid, res_type, p, 0, lat, lon) for p, lat, lon in values.coords)
    for attr, table, cols in _COLUMNS:
        if batches[attr]:
            _execute_rows(conn, table, cols, batches[attr])
    if coords:
        _execute_rows(conn, idx_coords, _COORD_COLS, coords)


_DELETES = {name: table.delete().where(table.c.pid == bindparam("pid_"))
            for name, table in INDEX_TABLES.items()}
# IndexValues attribute -> INDEX_TABLES key of the table holding those rows.
_TABLE_OF = {"strings": "string", "tokens": "token", "references": "reference",
             "dates": "date", "numbers": "number", "quantities": "quantity", "uris": "uri",
             "coords": "special"}


def _tables_with_rows(values: IndexValues) -> list[str]:
    return [table for attr, table in _TABLE_OF.items() if getattr(values, attr)]


def delete_index(conn: Connection, pid: int, previous: dict[str, Any] | None = None) -> None:
    """Remove every index row of a resource. With the `previous` body, only the tables it
    has rows in are touched (prebuilt statements: no per-call SQL construction)."""
    names = (_tables_with_rows(extract_index(previous)) if previous is not None
             else list(_DELETES))
    for name in names:
        conn.execute(_DELETES[name], {"pid_": pid})


def index_new(conn: Connection, pid: int, res_type: str, resource: dict[str, Any]) -> None:
    """Index a resource that has no index rows yet (a create: nothing to delete)."""
    insert_index(conn, pid, res_type, extract_index(resource))


def replace_index(conn: Connection, pid: int, res_type: str, resource: dict[str, Any],
                  previous: dict[str, Any] | None = None) -> None:
    """Replace a resource's index rows with those extracted from its new body; `previous`
    (the body being replaced) limits the deletes to the tables that hold its rows."""
    values = extract_index(resource)
    delete_index(conn, pid, previous)
    insert_index(conn, pid, res_type, values)
