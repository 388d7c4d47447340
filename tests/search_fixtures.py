"""Test helper: store resources (row + index rows in one transaction) without the repository."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from hypothesis import strategies as st
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


# -- random values for the search property tests ------------------------------------------
# A small calendar so that range boundaries of different precisions often coincide
# (e.g. "2020" and "2020-12-31" share their upper bound), where prefix bugs hide.
_years = st.sampled_from([2020, 2021])
_months = st.sampled_from([1, 2, 12])
_days = st.sampled_from([1, 28, 29])
dates = st.one_of(
    _years.map(str),
    st.tuples(_years, _months).map(lambda t: f"{t[0]}-{t[1]:02d}"),
    st.tuples(_years, _months, _days).map(lambda t: f"{t[0]}-{t[1]:02d}-{t[2]:02d}")
    .filter(lambda d: not d.endswith("2021-02-29")),
    st.tuples(_years, _months, _days, st.sampled_from([0, 23])).map(
        lambda t: f"{t[0]}-{t[1]:02d}-{t[2]:02d}T{t[3]:02d}:30:00Z")
    .filter(lambda d: "2021-02-29" not in d),
)
codes = st.sampled_from(["a", "b", "c"])
systems = st.sampled_from(["http://s1", "http://s2", None])
names = st.sampled_from(["Éloïse", "eloise", "Elo", "Mark", "Marco", "anne marie", "ANN"])


def coding(system: str | None, code: str, display: str | None = None) -> dict[str, Any]:
    """A Coding (no system when `system` is None)."""
    out: dict[str, Any] = {"code": code} if system is None else {"system": system,
                                                                  "code": code}
    if display:
        out["display"] = display
    return out
