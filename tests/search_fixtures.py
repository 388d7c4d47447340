"""Test helper: store resources (row + index rows in one transaction) without the repository."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from fhir_server.storage.index_store import delete_index, replace_index
from fhir_server.storage.schema import resources

_clock = [0]


def now_us() -> int:
    """Strictly increasing epoch microseconds (distinct last_updated per write)."""
    t = int(time.time() * 1_000_000)
    _clock[0] = max(t, _clock[0] + 1)
    return _clock[0]


def store(conn: Connection, resource: dict[str, Any], *, last_updated: int | None = None) -> int:
    """Insert or replace a resource and its index rows; returns its pid."""
    res_type, res_id = resource["resourceType"], resource["id"]
    lu = last_updated if last_updated is not None else now_us()
    body = dict(resource)
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(lu // 1_000_000))
    body["meta"] = {**body.get("meta", {}), "lastUpdated": f"{iso}.{lu % 1_000_000:06d}Z"}
    existing = conn.execute(select(resources.c.pid, resources.c.version).where(
        resources.c.res_type == res_type, resources.c.res_id == res_id)).first()
    if existing is not None:
        conn.execute(resources.update().where(resources.c.pid == existing.pid).values(
            version=existing.version + 1, last_updated=lu, deleted=False,
            body=json.dumps(body)))
        pid = existing.pid
    else:
        pid = conn.execute(insert(resources).values(
            res_type=res_type, res_id=res_id, version=1, last_updated=lu, deleted=False,
            body=json.dumps(body)).returning(resources.c.pid)).scalar_one()
    replace_index(conn, pid, res_type, body)
    return pid


def store_all(conn: Connection, items: Iterable[dict[str, Any]]) -> list[int]:
    """Store several resources in the caller's transaction."""
    return [store(conn, r) for r in items]


def mark_deleted(conn: Connection, res_type: str, res_id: str) -> None:
    """Delete a resource the way the repository does: flag the row, drop its index rows."""
    pid = conn.execute(select(resources.c.pid).where(
        resources.c.res_type == res_type, resources.c.res_id == res_id)).scalar_one()
    conn.execute(resources.update().where(resources.c.pid == pid).values(
        deleted=True, body=None))
    delete_index(conn, pid)


def wipe(conn: Connection) -> None:
    """Remove every resource and index row (tests share one database per module)."""
    from fhir_server.storage.index_schema import INDEX_TABLES

    for table in INDEX_TABLES.values():
        conn.execute(delete(table))
    conn.execute(delete(resources))
