"""The Repository: create, read, vread, update, delete and history of resources.

All methods run on one Connection that is already inside a transaction (see `Database`).
The resource row holds the current version; `resource_history` holds every version (the
bodies of superseded versions compressed, the current one's read from the resource row:
`history_bodies`).
Index rows are replaced in the same transaction (`index_store`).

Concurrency: an update is `UPDATE ... WHERE pid = ? AND version = ?` (optimistic). If another
writer committed first, no row matches: with an expected version (If-Match) the caller gets
412, otherwise we re-read and retry, so versions stay gap-free and no write is lost.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import Connection, Select, and_, bindparam, func, select

from fhir_server.errors import FhirError
from fhir_server.formats.decimals import json_default
from fhir_server.storage import history_bodies, index_store, write_buffer
from fhir_server.storage.db import author_of
from fhir_server.storage.index_schema import idx_reference
from fhir_server.storage.schema import history, resources

MAX_WRITE_RETRIES = 20
_CHUNK = 500  # ids per IN list
_CHECK_MODULUS = 1_000_000_007  # keeps the lastUpdated checksum within 64 bits


@dataclass(frozen=True)
class StoredResource:
    """One stored version of a resource. `body` is the JSON text (None for a deletion)."""

    pid: int
    res_type: str
    res_id: str
    version: int
    last_updated: int  # epoch microseconds
    deleted: bool
    body: str | None
    method: str = ""

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    @property
    def last_updated_iso(self) -> str:
        return format_instant(self.last_updated)

    @property
    def last_modified_http(self) -> str:
        dt = datetime.fromtimestamp(self.last_updated / 1_000_000, tz=UTC)
        return dt.strftime("%a, %d %b %Y %H:%M:%S GMT")

    def resource(self) -> dict[str, Any]:
        """The body parsed into a dict (raises if deleted)."""
        if self.body is None:
            raise ValueError("deleted version has no body")
        return orjson.loads(self.body)


_REPLAY_CLOCK: ContextVar[int | None] = ContextVar("replay_clock", default=None)


def now_us() -> int:
    """Current time in epoch microseconds (the replay time inside `replay_clock`)."""
    replayed = _REPLAY_CLOCK.get()
    return replayed if replayed is not None else time.time_ns() // 1000


@contextmanager
def replay_clock(at_us: int) -> Iterator[None]:
    """Stamp the writes made in this context (this thread only) at `at_us`, for loading
    data with the times they happened (the synthetic population in examples/, imports).
    Never used by a request: every version a client writes is stamped with the real time."""
    token = _REPLAY_CLOCK.set(at_us)
    try:
        yield
    finally:
        _REPLAY_CLOCK.reset(token)


def format_instant(us: int) -> str:
    """FHIR instant with millisecond precision and UTC offset."""
    dt = datetime.fromtimestamp(us / 1_000_000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}+00:00"


def new_id() -> str:
    return str(uuid.uuid4())


def _with_meta(resource: dict[str, Any], res_id: str, version: int, updated_us: int) -> str:
    """Set id and meta.versionId/lastUpdated, keeping the client's other content as sent."""
    resource["id"] = res_id
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = format_instant(updated_us)
    resource["meta"] = meta
    return orjson.dumps(resource, default=json_default).decode()


_COLS = (
    resources.c.pid, resources.c.res_type, resources.c.res_id, resources.c.version,
    resources.c.last_updated, resources.c.deleted, resources.c.body,
)
_HCOLS = (
    history.c.pid, history.c.res_type, history.c.res_id, history.c.version,
    history.c.last_updated, history.c.deleted, history.c.zbody,
    history_bodies.CURRENT.c.body, history.c.method,
)


# The hot single-row statements, sent straight to the DB-API cursor (SQLAlchemy's per-call
# compile-cache and result machinery cost more than the statements themselves here).
_COLUMN_LIST = "pid, res_type, res_id, version, last_updated, deleted, body"
_RAW_SQL = {
    "read": f"SELECT {_COLUMN_LIST} FROM resources WHERE res_type = ? AND res_id = ?",
    "insert": "INSERT INTO resources "
              "(res_type, res_id, version, last_updated, deleted, body, author_org) "
              "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING pid",
    "insert_if_absent": "INSERT INTO resources "
                        "(res_type, res_id, version, last_updated, deleted, body, author_org) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (res_type, res_id) DO NOTHING RETURNING pid",
    "update": "UPDATE resources SET version = ?, last_updated = ?, deleted = ?, body = ? "
              "WHERE pid = ? AND version = ?",
    # re-creating a deleted resource: whoever writes it now is its author
    "revive": "UPDATE resources SET version = ?, last_updated = ?, deleted = ?, body = ?, "
              "author_org = ? WHERE pid = ? AND version = ?",
}
_RAW_SQL_FORMAT = {name: sql.replace("?", "%s") for name, sql in _RAW_SQL.items()}


def live(stored: StoredResource | None, res_type: str, res_id: str) -> StoredResource:
    """`stored` when it is a current version: 404 when None, 410 when a deletion."""
    if stored is None:
        raise FhirError(404, "not-found", f"Resource {res_type}/{res_id} is not known")
    if stored.deleted:
        raise FhirError(410, "deleted", f"Resource {res_type}/{res_id} has been deleted")
    return stored


def _row(row: Any) -> StoredResource:
    """A StoredResource from a `_COLS` row (or the raw read statement's)."""
    return StoredResource(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6])


def _history_row(row: Any) -> StoredResource:
    """A StoredResource from a `_HCOLS` row selected from `history_bodies.VERSIONS`."""
    deleted = bool(row[5])
    return StoredResource(row[0], row[1], row[2], row[3], row[4], deleted,
                          history_bodies.body(deleted, row[6], row[7]), row[8])


@lru_cache(maxsize=16)
def _referrers_statement(ignore_types: frozenset[str], limit: int) -> Select[Any]:
    """The referrers query, built once per (ignored types, limit): a delete runs it."""
    x = idx_reference.alias()
    r = resources.alias()
    res_type, res_id = bindparam("target_type"), bindparam("target_id")
    query = (select(r.c.res_type, r.c.res_id, x.c.param)
             .select_from(x.join(r, r.c.pid == x.c.pid))
             .where(x.c.target_id == res_id, x.c.target_type == res_type,
                    r.c.deleted.is_(False),
                    ~and_(r.c.res_type == res_type, r.c.res_id == res_id))
             .order_by(r.c.res_type, r.c.res_id, x.c.param).limit(limit))
    if ignore_types:
        query = query.where(r.c.res_type.not_in(sorted(ignore_types)))
    return query


class Repository:
    """Resource persistence bound to one transaction's Connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._sql = _RAW_SQL if conn.dialect.paramstyle == "qmark" else _RAW_SQL_FORMAT
        self._cursor: Any = None

    def _execute(self, name: str, params: tuple[Any, ...]) -> Any:
        """Run one of the prebuilt statements on this transaction's DB-API cursor."""
        if self._cursor is None:
            self._cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        self._cursor.execute(self._sql[name], params)
        return self._cursor

    # -- reads ---------------------------------------------------------------------------
    def require(self, res_type: str, res_id: str) -> StoredResource:
        """The current version: 404 when it never existed, 410 when it is deleted."""
        return live(self.read(res_type, res_id), res_type, res_id)

    def current(self, res_type: str, res_id: str) -> dict[str, Any] | None:
        """The current content (None when absent or deleted)."""
        stored = self.read(res_type, res_id)
        return stored.resource() if stored is not None and not stored.deleted else None

    def search_resources(self, res_type: str, params: list[tuple[str, str]], *,
                         limit: int = 1000, restrict: Callable[..., Any] | None = None,
                         ) -> list[dict[str, Any]]:
        """The current resources a search selects, bodies in one statement (oldest first,
        at most `limit`; `restrict` narrows to what a caller may see)."""
        from fhir_server.storage.search_sql import find_resources

        return find_resources(self.conn, res_type, params, limit=limit, restrict=restrict)

    def read(self, res_type: str, res_id: str) -> StoredResource | None:
        """Current version (possibly a deletion marker), or None if never existed."""
        cursor = self._execute("read", (res_type, res_id))
        row = cursor.fetchone()
        return _row(row) if row else None

    def vread(self, res_type: str, res_id: str, version: int) -> StoredResource | None:
        row = self.conn.execute(
            select(*_HCOLS).select_from(history_bodies.VERSIONS)
            .where(history.c.res_type == res_type, history.c.res_id == res_id,
                   history.c.version == version)
        ).first()
        return _history_row(row) if row else None

    def read_many(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], StoredResource]:
        """Current versions of several resources in one statement per type."""
        by_type: dict[str, list[str]] = {}
        for res_type, res_id in keys:
            by_type.setdefault(res_type, []).append(res_id)
        found: dict[tuple[str, str], StoredResource] = {}
        for res_type, ids in by_type.items():
            rows = self.conn.execute(
                select(*_COLS).where(resources.c.res_type == res_type, resources.c.res_id.in_(ids))
            )
            for row in rows:
                stored = _row(row)
                found[(stored.res_type, stored.res_id)] = stored
        return found

    # -- writes --------------------------------------------------------------------------
    def create(self, resource: dict[str, Any], *, res_id: str | None = None,
               method: str = "POST") -> StoredResource:
        """Insert a new resource (version 1). The dict gets id and meta set."""
        created = self._insert(resource, res_id or new_id(), method, "insert")
        assert created is not None  # a plain INSERT returns the pid or raises
        return created

    def _insert(self, resource: dict[str, Any], res_id: str, method: str,
                statement: str) -> StoredResource | None:
        """Insert version 1 with `statement` (a `_RAW_SQL` name); None when it inserted
        nothing (the id exists and the statement skips conflicts)."""
        res_type = resource["resourceType"]
        updated = now_us()
        body = _with_meta(resource, res_id, 1, updated)
        row = self._execute(statement, (res_type, res_id, 1, updated, False, body,
                                        author_of(self.conn))).fetchone()
        if row is None:
            return None
        pid = row[0]
        self._append_history(pid, res_type, res_id, 1, updated, method, False)
        index_store.index_new(self.conn, pid, res_type, resource)
        return StoredResource(pid, res_type, res_id, 1, updated, False, body, method)

    def update(self, resource: dict[str, Any], res_id: str, *,
               expected_version: int | None = None,
               method: str = "PUT") -> tuple[StoredResource, StoredResource | None]:
        """Write a new version (update-as-create when absent). Returns (new, previous);
        previous is None when the resource was created. Raises 412 on version mismatch."""
        res_type = resource["resourceType"]
        for _ in range(MAX_WRITE_RETRIES):
            current = self.read(res_type, res_id)
            if expected_version is not None:
                if current is None or current.deleted or current.version != expected_version:
                    have = "none" if current is None or current.deleted else current.version
                    raise FhirError(412, "conflict",
                                    f"Version conflict: If-Match expects version "
                                    f"{expected_version}, current version is {have}")
            if current is None:
                created = self._try_create(resource, res_id, method)
                if created is not None:
                    return created, None
                continue  # lost a create race: now it exists; update it
            version = current.version + 1
            updated = max(now_us(), current.last_updated + 1)
            body = _with_meta(resource, res_id, version, updated)
            if current.deleted:
                result = self._execute("revive", (version, updated, False, body,
                                                  author_of(self.conn), current.pid,
                                                  current.version))
            else:
                result = self._execute("update", (version, updated, False, body, current.pid,
                                                  current.version))
            if result.rowcount != 1:
                if expected_version is not None:
                    raise FhirError(412, "conflict",
                                    "Version conflict: the resource was changed concurrently")
                continue
            self._supersede(current)
            self._append_history(current.pid, res_type, res_id, version, updated, method,
                                 False)
            if current.deleted:  # a deleted resource has no index rows left
                index_store.index_new(self.conn, current.pid, res_type, resource)
            else:
                index_store.replace_index(self.conn, current.pid, res_type, resource,
                                          current.resource())
            return (StoredResource(current.pid, res_type, res_id, version, updated, False,
                                   body, method), current)
        raise FhirError(409, "conflict", "Too many concurrent writes to this resource; retry")

    def _try_create(self, resource: dict[str, Any], res_id: str,
                    method: str) -> StoredResource | None:
        """Create with a client-chosen id; None if a concurrent writer created it first
        (INSERT ... ON CONFLICT DO NOTHING: no savepoint, no error to recover from)."""
        return self._insert(resource, res_id, method, "insert_if_absent")

    def delete(self, res_type: str, res_id: str, *,
               expected_version: int | None = None) -> tuple[StoredResource | None, bool]:
        """Mark deleted as a new version. Returns (deletion version or None, existed)."""
        for _ in range(MAX_WRITE_RETRIES):
            current = self.read(res_type, res_id)
            if expected_version is not None and (
                current is None or current.deleted or current.version != expected_version
            ):
                raise FhirError(412, "conflict", "Version conflict on delete")
            if current is None or current.deleted:
                return current, False
            version = current.version + 1
            updated = max(now_us(), current.last_updated + 1)
            result = self._execute("update", (version, updated, True, None, current.pid,
                                              current.version))
            if result.rowcount != 1:
                continue
            self._supersede(current)
            self._append_history(current.pid, res_type, res_id, version, updated, "DELETE",
                                 True)
            index_store.delete_index(self.conn, current.pid, current.resource())
            return (StoredResource(current.pid, res_type, res_id, version, updated, True, None,
                                   "DELETE"), True)
        raise FhirError(409, "conflict", "Too many concurrent writes to this resource; retry")

    def referrers(self, res_type: str, res_id: str, *, ignore_types: frozenset[str] = frozenset(),
                  limit: int = 5) -> list[tuple[str, str, str]]:
        """Live resources that reference `res_type/res_id` through a reference search
        parameter: (type, id, parameter), at most `limit`, self-references left out."""
        query = _referrers_statement(ignore_types, limit * 4)
        rows = self.conn.execute(query, {"target_type": res_type, "target_id": res_id})
        out: list[tuple[str, str, str]] = []
        for row in rows:
            if (row[0], row[1]) not in {(t, i) for t, i, _p in out}:
                out.append((row[0], row[1], row[2]))
            if len(out) == limit:
                break
        return out

    def _append_history(self, pid: int, res_type: str, res_id: str, version: int, updated: int,
                        method: str, deleted: bool) -> None:
        """Queue the history row of a new version: no body (a current version's body is
        the resource row's; `_supersede` stores it when a later version replaces it)."""
        write_buffer.add_history(self.conn, (pid, res_type, res_id, version, updated, method,
                                             deleted, None))

    def _supersede(self, previous: StoredResource) -> None:
        """Keep `previous` (the version a write just replaced) in its history row."""
        if previous.body is not None:  # a deletion version has no body to keep
            write_buffer.supersede(self.conn, previous.pid, previous.res_type,
                                   previous.res_id, previous.version,
                                   history_bodies.encode(previous.body))

    # -- history -------------------------------------------------------------------------
    def versions(self, res_type: str, ids: list[str]) -> dict[str, list[StoredResource]]:
        """Every version of several resources, oldest first, in one statement per chunk of
        ids (never a statement per resource)."""
        out: dict[str, list[StoredResource]] = {}
        for i in range(0, len(ids), _CHUNK):
            rows = self.conn.execute(
                select(*_HCOLS).select_from(history_bodies.VERSIONS)
                .where(history.c.res_type == res_type, history.c.res_id.in_(ids[i:i + _CHUNK]))
                .order_by(history.c.res_id, history.c.version))
            for row in rows:
                stored = _history_row(row)
                out.setdefault(stored.res_id, []).append(stored)
        return out

    # -- whole-type scans, for caches that rebuild what changed ----------------------------
    def fingerprint(self, types: tuple[str, ...]) -> tuple[int, int, int]:
        """Rows, newest lastUpdated and a checksum of every lastUpdated of `types`: any write
        changes it; answered from the (res_type, last_updated) index alone."""
        stamp = resources.c.last_updated
        row = self.conn.execute(select(func.count(), func.max(stamp),
                                       func.sum(stamp % _CHECK_MODULUS))
                                .where(resources.c.res_type.in_(types))).one()
        return (int(row[0] or 0), int(row[1] or 0), int(row[2] or 0))

    def live_tags(self, res_type: str) -> dict[str, tuple[int, int]]:
        """id -> (version, lastUpdated) of every current resource of a type."""
        return {rid: (version, stamp) for rid, version, stamp in self.conn.execute(
            select(resources.c.res_id, resources.c.version, resources.c.last_updated).where(
                resources.c.res_type == res_type, resources.c.deleted.is_(False)))}

    def live_bodies(self, res_type: str, ids: list[str] | None = None,
                    ) -> Iterator[tuple[str, int, int, str]]:
        """(id, version, lastUpdated, body text) of the current resources of a type: all, or
        those in `ids` (in chunks)."""
        base = select(resources.c.res_id, resources.c.version, resources.c.last_updated,
                      resources.c.body).where(resources.c.res_type == res_type,
                                              resources.c.deleted.is_(False))
        queries = [base] if ids is None else [
            base.where(resources.c.res_id.in_(ids[i:i + _CHUNK]))
            for i in range(0, len(ids), _CHUNK)]
        for query in queries:
            for rid, version, stamp, body in self.conn.execute(query):
                if body:
                    yield rid, version, stamp, body

    def history(self, *, res_type: str | None = None, res_id: str | None = None,
                since_us: int | None = None, before_us: int | None = None,
                cursor: tuple[int, int] | None = None, count: int = 20,
                restrict: Callable[..., Any] | None = None,
                ) -> tuple[list[StoredResource], tuple[int, int] | None, int]:
        """Versions newest first. Keyset paging on (last_updated, hid): `cursor` is the key of
        the last entry of the previous page. Returns (page, next cursor or None, total).
        `restrict(resources_alias)` narrows to resources the caller may see (access layer)."""
        from sqlalchemy import exists, func, or_

        conds = []
        types = None if res_type is None else (res_type,)
        if restrict is not None:
            r = resources.alias()
            conds.append(exists(select(1).select_from(r).where(r.c.pid == history.c.pid,
                                                              restrict(r, types))))
        if res_type:
            conds.append(history.c.res_type == res_type)
        if res_id:
            conds.append(history.c.res_id == res_id)
        if since_us is not None:
            conds.append(history.c.last_updated >= since_us)
        if before_us is not None:
            conds.append(history.c.last_updated < before_us)
        total = self.conn.execute(select(func.count()).select_from(history).where(*conds)
                                  ).scalar_one()
        page_conds = list(conds)
        if cursor is not None:
            lu, hid = cursor
            page_conds.append(or_(history.c.last_updated < lu,
                                  and_(history.c.last_updated == lu, history.c.hid < hid)))
        rows = self.conn.execute(
            select(*_HCOLS, history.c.hid).select_from(history_bodies.VERSIONS)
            .where(*page_conds)
            .order_by(history.c.last_updated.desc(), history.c.hid.desc()).limit(count + 1)
        ).all()
        page = [_history_row(r) for r in rows[:count]]
        next_cursor = (rows[count - 1][4], rows[count - 1][9]) if len(rows) > count else None
        return page, next_cursor, total

