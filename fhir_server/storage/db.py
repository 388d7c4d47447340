"""Database engine and transactions, identical in use on SQLite and PostgreSQL."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from fhir_server.storage import write_buffer

__all__ = ["Connection", "Database"]  # Connection: the type callers hold a transaction by


class Database:
    """Owns the engine. `write()` and `read()` each yield a Connection in one transaction.

    On SQLite, write transactions start with BEGIN IMMEDIATE so that two writers never
    deadlock on a lock upgrade; the busy timeout makes the second one wait instead of failing.
    """

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False,
                 statement_timeout: float | None = None) -> None:
        """`statement_timeout` (seconds, PostgreSQL): the longest any one statement may run
        (the request servers set it to their request time budget)."""
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self._lock_path: str | None = None
        if self.is_sqlite:
            db_path = self.url.database
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
                self._lock_path = f"{db_path}.writelock"
            self.engine: Engine = create_engine(
                self.url, echo=echo, pool_size=pool_size, max_overflow=20,
                connect_args={"check_same_thread": False, "timeout": 30},
            )
            _install_sqlite_hooks(self.engine)
        else:
            # No pre-ping (it costs a round trip per transaction); recycle instead.
            self.engine = create_engine(
                self.url, echo=echo, pool_size=pool_size, max_overflow=20, pool_recycle=1800
            )
            if statement_timeout:
                _install_statement_timeout(self.engine, statement_timeout)
        write_buffer.install(self.engine)

    @contextmanager
    def write(self, author_org: str | None = None) -> Iterator[Connection]:
        """A read-write transaction: committed on normal exit, rolled back on any exception.

        `author_org` ("Organization/x") is recorded as the author of every resource this
        transaction creates (see `author_of`); None for the server's own writes."""
        if self.is_sqlite:
            with self._sqlite_writer_turn(), self.engine.connect() as conn:
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
                with _authored(conn, author_org), conn.begin():
                    yield conn
            return
        with self.engine.connect() as conn, _authored(conn, author_org), conn.begin():
            yield conn

    @contextmanager
    def _sqlite_writer_turn(self) -> Iterator[None]:
        """SQLite has one writer at a time. Waiting on an OS file lock (shared by every
        process and thread using this database) wakes the next writer at once, instead of
        SQLite's busy handler sleeping up to 100 ms between retries (long tail latency)."""
        if self._lock_path is None:
            yield
            return
        with open(self._lock_path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (consistent snapshot on PostgreSQL and SQLite WAL)."""
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def _install_statement_timeout(engine: Engine, seconds: float) -> None:
    milliseconds = max(int(seconds * 1000), 1)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET statement_timeout = {milliseconds}")
        dbapi_conn.commit()


_AUTHOR_KEY = "fhir_author_org"


@contextmanager
def _authored(conn: Connection, author_org: str | None) -> Iterator[None]:
    """Mark `conn` (its DB-API connection's info, which outlives this checkout) with the
    author of the writes in this transaction, and clear it afterwards."""
    conn.info[_AUTHOR_KEY] = author_org
    try:
        yield
    finally:
        conn.info.pop(_AUTHOR_KEY, None)


def author_of(conn: Connection) -> str | None:
    """The organization writing in this transaction (None: the server itself)."""
    return conn.info.get(_AUTHOR_KEY)


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA mmap_size=2147483648")
        cur.execute("PRAGMA cache_size=-32768")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")
