"""Deferred history and index rows: one executemany per table per transaction.

A write transaction (a 500-entry Bundle, or one create with its derived resources) used to
send about eight statements per resource: the resource row, its history row and one
delete / insert per index table. The resource row is still written at once (its `pid` and
version checks are needed right away); its history and index rows are collected here and
sent in one `executemany` per table:

* before any statement that reads or changes the history or index tables on the same
  connection (a search, a conditional match, a history read), so reads inside the
  transaction always see every earlier write;
* before a SAVEPOINT, and before COMMIT;
* a ROLLBACK (or a rollback to a savepoint) discards what is pending.

Index deletes are kept as a set of pids per table, and a delete drops the pending inserts
of that pid, so executing all deletes before all inserts gives the same rows as executing
every statement in order.

A history row is written without a body (the current version's body is the resource row's);
when that version is superseded its compressed body is added (`supersede`): into the pending
row when it is still here, otherwise by one batched UPDATE at the flush.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, event

_INFO_KEY = "fhir_write_buffer"
# Statements on these tables see the buffered rows only after a flush.
_WATCHED = ("idx_", "resource_history")


@dataclass
class _Pending:
    """What one connection's open transaction still has to send."""

    inserts: dict[str, dict[int, list[tuple[Any, ...]]]] = field(default_factory=dict)
    deletes: dict[str, set[int]] = field(default_factory=dict)
    history: list[tuple[Any, ...]] = field(default_factory=list)
    history_at: dict[tuple[int, int], int] = field(default_factory=dict)  # (pid, version)
    superseded: list[tuple[bytes, str, str, int]] = field(default_factory=list)
    insert_sql: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.inserts or self.deletes or self.history or self.superseded)


def _pending(conn: Connection) -> _Pending:
    pending = conn.info.get(_INFO_KEY)
    if pending is None:
        pending = conn.info[_INFO_KEY] = _Pending()
    return pending


def _mark(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def add_rows(
    conn: Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """Queue index rows (each starting with pid) for `table`."""
    if not rows:
        return
    pending = _pending(conn)
    if table not in pending.insert_sql:
        marks = ", ".join([_mark(conn)] * len(columns))
        pending.insert_sql[table] = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
    by_pid = pending.inserts.setdefault(table, {})
    for row in rows:
        by_pid.setdefault(row[0], []).append(row)


def delete_rows(conn: Connection, tables: Sequence[str], pid: int) -> None:
    """Queue the removal of every row of `pid` from `tables` (pending inserts included)."""
    pending = _pending(conn)
    for table in tables:
        queued = pending.inserts.get(table)
        if queued is not None:
            queued.pop(pid, None)
        pending.deletes.setdefault(table, set()).add(pid)


_HISTORY_COLUMNS = (
    "pid",
    "res_type",
    "res_id",
    "version",
    "last_updated",
    "method",
    "deleted",
    "zbody",
)
_ZBODY = _HISTORY_COLUMNS.index("zbody")


def add_history(conn: Connection, row: tuple[Any, ...]) -> None:
    """Queue one resource_history row (values in `_HISTORY_COLUMNS` order)."""
    pending = _pending(conn)
    pending.history_at[(row[0], row[3])] = len(pending.history)
    pending.history.append(row)


def supersede(conn: Connection, pid: int, res_type: str, res_id: str, version: int,
              zbody: bytes) -> None:
    """Store `zbody` (the compressed body) in the history row of a version just superseded."""
    pending = _pending(conn)
    at = pending.history_at.get((pid, version))
    if at is not None:
        row = pending.history[at]
        pending.history[at] = row[:_ZBODY] + (zbody,) + row[_ZBODY + 1:]
    else:
        pending.superseded.append((zbody, res_type, res_id, version))


def flush(conn: Connection) -> None:
    """Send everything pending on this connection (deletes, then inserts, then history rows,
    then the bodies of versions superseded since they were sent)."""
    pending = conn.info.get(_INFO_KEY)
    if not pending:
        return
    conn.info[_INFO_KEY] = None
    mark = _mark(conn)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        for table, pids in pending.deletes.items():
            if pids:
                cursor.executemany(
                    f"DELETE FROM {table} WHERE pid = {mark}", [(pid,) for pid in pids]
                )
        for table, by_pid in pending.inserts.items():
            rows = [row for group in by_pid.values() for row in group]
            if rows:
                cursor.executemany(pending.insert_sql[table], rows)
        if pending.history:
            marks = ", ".join([mark] * len(_HISTORY_COLUMNS))
            cursor.executemany(
                f"INSERT INTO resource_history ({', '.join(_HISTORY_COLUMNS)}) VALUES ({marks})",
                pending.history,
            )
        if pending.superseded:
            cursor.executemany(
                f"UPDATE resource_history SET zbody = {mark} "
                f"WHERE res_type = {mark} AND res_id = {mark} AND version = {mark}",
                pending.superseded,
            )
    finally:
        cursor.close()


def discard(conn: Connection) -> None:
    """Drop what is pending (the transaction or savepoint is being rolled back)."""
    conn.info[_INFO_KEY] = None


def install(engine: Engine) -> None:
    """Flush before statements on the buffered tables, savepoints and commits; discard on
    rollbacks."""

    @event.listens_for(engine, "before_cursor_execute")
    def _before_statement(conn, _cursor, statement, _params, _context, _many):  # type: ignore[no-untyped-def]
        if conn.info.get(_INFO_KEY) and any(name in statement for name in _WATCHED):
            flush(conn)

    @event.listens_for(engine, "commit")
    def _before_commit(conn):  # type: ignore[no-untyped-def]
        flush(conn)

    @event.listens_for(engine, "savepoint")
    def _before_savepoint(conn, _name):  # type: ignore[no-untyped-def]
        flush(conn)

    @event.listens_for(engine, "rollback")
    def _on_rollback(conn):  # type: ignore[no-untyped-def]
        discard(conn)

    @event.listens_for(engine, "rollback_savepoint")
    def _on_rollback_savepoint(conn, _name, _context):  # type: ignore[no-untyped-def]
        discard(conn)


def pending_statements(conn: Connection) -> int:
    """How many statements the next flush would send (for tests and diagnostics)."""
    pending = conn.info.get(_INFO_KEY)
    if not pending:
        return 0
    deletes = sum(1 for pids in pending.deletes.values() if pids)
    inserts = sum(1 for by_pid in pending.inserts.values() if any(by_pid.values()))
    return deletes + inserts + (1 if pending.history else 0) + (1 if pending.superseded else 0)
